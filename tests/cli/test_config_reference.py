"""`mlsidecar config reference`: docs/configuration.md is its output, and it covers the whole schema."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from sidecar.config import Settings, apply_env_overrides
from sidecar.configref import render_markdown, sections

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
REGENERATE = ".venv/bin/mlsidecar config reference > docs/configuration.md"


def _model(annotation: object) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def schema_keys() -> dict[str, set[str]]:
    """Every key of the schema by section path, walked here without the generator's help."""
    found: dict[str, set[str]] = {}

    def walk(model: type[BaseModel], path: str) -> None:
        found.setdefault(path, set())
        for name, info in model.model_fields.items():
            nested = _model(info.annotation)
            if nested is not None:
                walk(nested, f"{path}.{name}")
                continue
            found[path].add(name)
            if typing.get_origin(info.annotation) is list:
                item = _model(typing.get_args(info.annotation)[0])
                if item is not None:
                    walk(item, f"{path}.{name}")

    for section, info in Settings.model_fields.items():
        walk(info.annotation, section)  # type: ignore[arg-type]
    return found


def documented_keys(text: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    section = None
    for line in text.splitlines():
        heading = re.fullmatch(r"## `\[\[?([a-z_.]+)\]\]?`", line)
        if heading:
            section = heading.group(1)
            found.setdefault(section, set())
            continue
        row = re.match(r"\| `([a-z_]+)` \|", line)
        if row and section is not None:
            found[section].add(row.group(1))
    return found


def test_committed_reference_is_the_generated_one():
    assert DOC.exists(), f"docs/configuration.md is missing; run: {REGENERATE}"
    assert DOC.read_text(encoding="utf-8") == render_markdown(), (
        f"docs/configuration.md differs from the schema in sidecar/config.py; run: {REGENERATE}")


def test_command_prints_the_reference_without_a_configuration_file(tmp_path):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLS_")}
    result = subprocess.run([sys.executable, "-m", "sidecar.cli", "config", "reference"], capture_output=True,
                            text=True, env=environment, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == render_markdown()
    as_json = subprocess.run([sys.executable, "-m", "sidecar.cli", "config", "reference", "--format", "json"],
                             capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=120)
    assert as_json.returncode == 0, as_json.stderr
    assert '"section": "wordpress"' in as_json.stdout


def test_every_schema_key_is_documented_and_nothing_else():
    assert documented_keys(render_markdown()) == schema_keys()


def test_secrets_and_requirements_come_from_the_schema():
    rows = {f"{s.path}.{e.key}": e for s in sections() for e in s.entries}
    assert rows["memberlux.rest_password"].secret and rows["bridge.api_keys"].secret
    assert rows["webhooks.endpoints.secret"].secret and not rows["web.port"].secret
    assert rows["wordpress.db_url"].default is None and rows["web.port"].default == "8080"
    assert rows["web.port"].allowed == "1 … 65 535"
    assert rows["log.format"].allowed == '`"text"`, `"json"`'
    assert rows["webhooks.endpoints.name"].env is None


@pytest.mark.parametrize("entry", [e for s in sections() if not s.array for e in s.entries
                                   if e.env and not e.env.endswith("<NAME>")],
                         ids=lambda e: e.env)
def test_environment_variable_names_reach_their_key(entry):
    merged = apply_env_overrides({}, {entry.env: "probe"})
    path = [part.lower() for part in entry.env.removeprefix("MLS_").split("__")]
    node = merged
    for part in path:
        node = node[part]
    assert node == "probe"
    section = ".".join(path[:-1])
    assert section in schema_keys() and path[-1] in schema_keys()[section]


def test_named_secret_tables_take_one_variable_per_name():
    merged = apply_env_overrides({}, {"MLS_WEB__API_TOKENS__REPORTS": "env:REPORTS_TOKEN"})
    assert merged == {"web": {"api_tokens": {"reports": "env:REPORTS_TOKEN"}}}
