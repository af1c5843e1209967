"""Every `mlsidecar` command that README.md and docs/*.md show works against the demo's configuration.

The commands are read from the Markdown itself (``sh`` code blocks and inline code), so a new example is
tested the day it is written. Notation in the docs: ``[--date D]`` is an optional part (run with it),
``a|b`` and ``[--x | --y]`` are alternatives (each is run), capital letters and ``<…>`` are values
(filled from the demo: a learner, a level, a grant, a program, the letters a level's dry run lists).
Documented values that only make sense on the doc's imagined site (``--level 12``,
``--user anna@example.com``) are replaced by the demo's.

Three kinds of mention are not run as they stand:

* the processes that run until stopped (``serve``, ``worker``, ``demo``, ``devstack serve``) are run
  with ``--help``: the mention must name a real command;
* a bare command name in running text (``mlsidecar grants show``, no options) that answers with a
  usage error (it needs arguments) is run with ``--help`` as well;
* a command whose outcome depends on the state of a record (``grants welcome <id> --resend`` only
  for a delivered grant; the demo's grant is still queued, no worker runs here) must end with its
  refusal, word for word.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from sidecar.cli import cli
from sidecar.demo import demo_config, demo_secrets, read_secret
from sidecar.devstack.emulator import create_emulator_app
from sidecar.devstack.seed import DEMO_API_LOGIN
from sidecar.devstack.server import serve_in_thread

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

RUN_UNTIL_STOPPED = {("serve",), ("worker",), ("demo",), ("devstack", "serve")}

#: Commands refused in the demo's state, with the refusal that must be printed.
REFUSED_IN_THIS_STATE = {
    ("grants", "welcome", "--resend"): "is queued: there is no letter to send",
    ("grants", "welcome", "--mark-delivered"): "is not queued, not unknown",
}


@dataclass(frozen=True)
class Mention:
    where: str      # file:line
    text: str       # as written, from `mlsidecar` on


def documented_mentions() -> list[Mention]:
    found: dict[str, Mention] = {}
    for document in DOCUMENTS:
        lines = document.read_text(encoding="utf-8").splitlines()
        fence: str | None = None     # the language of the code block the line is in
        for number, line in enumerate(lines, 1):
            if line.lstrip().startswith("```"):
                fence = line.strip()[3:] if fence is None else None
                continue
            where = f"{document.relative_to(ROOT)}:{number}"
            if fence is None:
                pieces = re.findall(r"`([^`]+)`", line)
            else:   # shell sessions only: diagrams and unit files name the commands, they do not run them
                pieces = [line] if fence == "sh" else []
            for piece in pieces:
                match = re.search(r"(?:^|[\s/])mlsidecar\s+([a-z].*)$", piece.split(" #")[0].strip())
                if match and not piece.lstrip().startswith("#"):
                    text = "mlsidecar " + match.group(1).replace("\\|", "|").strip()
                    found.setdefault(text, Mention(where, text))
    return list(found.values())


def _alternatives(group: str) -> list[str]:
    parts = re.split(r"\s+[|/]\s+", group)
    return parts if len(parts) > 1 else [group]


def spelled_out(text: str) -> list[list[str]]:
    """Every concrete command line a mention stands for (before values are filled in)."""
    text = re.sub(r"<([^>]+)>", lambda m: "<" + m.group(1).replace(" ", "-") + ">", text)  # one word each
    choices: list[list[str]] = []
    for piece in re.split(r"(\[[^\]]*\])", text):
        if piece.startswith("["):
            choices.append(_alternatives(piece[1:-1].strip()))
        elif piece.strip():
            choices.append([piece])
    lines = []
    for combination in itertools.product(*choices):
        words = shlex.split(" ".join(combination))[1:]   # without "mlsidecar"
        options = [word.split("|") for word in words]
        lines.extend(list(line) for line in itertools.product(*options))
    return lines


@dataclass
class Demo:
    config: Path
    work: Path
    learners: list[str]     # e-mails; each command that names a learner gets the next one
    level: str
    reminder_level: str     # monitoring on and letters set
    grant: str
    program: str

    def learner(self) -> str:
        return self.learners.pop(0)


OPTION_VALUES = {"--level": lambda demo: demo.level, "--user": Demo.learner}
PLACEHOLDER_DATES = {"D", "A", "B", "YYYY-MM-DD"}


def filled_in(words: list[str], demo: Demo) -> list[str]:
    out: list[str] = []
    for index, word in enumerate(words):
        before = words[index - 1] if index else ""
        if before == "--level" and out[:2] in (["remind", "approve"], ["remind", "revoke"]):
            out.append(demo.reminder_level)     # a level that sends reminders: one can approve it
        elif before in OPTION_VALUES:
            out.append(OPTION_VALUES[before](demo))
        elif word in PLACEHOLDER_DATES:
            out.append({"A": "2026-01-01", "B": "2026-11-20"}.get(word, "2026-11-24"))
        elif before == "--db-url":
            out.append(f"sqlite:///{demo.work / 'seeded.sqlite'}")
        elif before in ("--users", "--levels", "--seed") and not word.isdigit():
            out.append({"--users": "30", "--levels": "2", "--seed": "1"}[before])
        elif before == "--letters":     # the letters the level's dry run lists awaiting approval
            out.append(str(awaiting_letters(demo, out[out.index("--level") + 1])))
        elif before == "--toml":
            out.append(str(demo.work / "programs.toml"))
        elif word in ("<id>", "<grant-id>") and out[:1] == ["grants"]:
            out.append(demo.grant)
        elif word in ("<id>", "<program-id>") or (out[:2] == ["programs", "status"] and word.isdigit()):
            out.append(demo.program)
        else:
            out.append(word)
    return out


def awaiting_letters(demo: Demo, level: str) -> int:
    from sidecar.reminders.approval import letter_count

    result = run(demo.config, ["remind", "--dry-run", "--level", level, "--format", "json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout[result.stdout.index("{"):])
    return letter_count(item["step"] for item in plan["items"] if item["action"] == "await")


def _toml_example() -> str:
    text = (ROOT / "docs" / "programs.md").read_text(encoding="utf-8")
    block = re.search(r"```toml\n(.*?)```", text, re.S)
    assert block, "docs/programs.md shows a programs TOML file"
    return "\n".join(line[2:] if line.startswith("  ") else line for line in block.group(1).splitlines())


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Demo:
    from sidecar.config import load_settings
    from tests.sites import seeded_site
    from tests.stores import migrate_store
    from sidecar.bootstrap import store_url

    root = tmp_path_factory.mktemp("documented")
    data = root / "demo"
    data.mkdir()
    seeded_site(f"sqlite:///{data / 'wordpress.sqlite'}", users=60, levels=4, seed=7, today=_today(), fresh=True)
    secrets = demo_secrets(data)
    engine = sa.create_engine(f"sqlite:///{data / 'wordpress.sqlite'}",
                              connect_args={"timeout": 30, "check_same_thread": False})
    emulator = create_emulator_app(engine, prefix="wp_", app_user=DEMO_API_LOGIN,
                                   app_password=read_secret(secrets["app-password"]), dialect="both")
    emulator_url, stop = serve_in_thread(emulator)
    config = data / "mlsidecar.toml"
    config.write_text(demo_config(data, emulator_url, DEMO_API_LOGIN, "127.0.0.1", 8080, secrets), encoding="utf-8")
    settings = load_settings(config, environ={})
    migrate_store(store_url(settings))
    (root / "programs.toml").write_text(_toml_example(), encoding="utf-8")
    run(config, ["programs", "import", "--legacy", "--apply"])
    programs = json.loads(run(config, ["programs", "list", "--format", "json"]).stdout)
    grant = _a_queued_grant(settings, read_secret(secrets["api-key"]))
    with engine.connect() as conn:
        learners = list(conn.exec_driver_sql("SELECT user_email FROM wp_users WHERE ID > 3 ORDER BY ID").scalars())
        reminder_level = conn.exec_driver_sql(
            "SELECT e.term_id FROM wp_termmeta e JOIN wp_termmeta d ON d.term_id = e.term_id "
            "WHERE e.meta_key = 'mlm_enabled' AND e.meta_value = '1' AND d.meta_key = 'mlm_email_1_subject' "
            "AND d.meta_value != '' ORDER BY e.term_id").scalars().first()
    assert reminder_level, "the seeded site has a level that sends reminders"
    try:
        yield Demo(config=config, work=root, learners=learners, level="10", reminder_level=str(reminder_level),
                   grant=grant,
                   program=str(programs[0]["id"]))
    finally:
        emulator.extensions["mbl_emulator"].shutdown()
        stop()
        engine.dispose()


def _today():
    from datetime import date

    return date(2026, 11, 24)


def _a_queued_grant(settings, api_key: str) -> str:
    """A CRM's grant as the demo's curl example sends it (no worker runs here, so it stays queued)."""
    from sidecar.app import create_app
    from sidecar.bootstrap import build_runtime

    runtime = build_runtime(settings)
    try:
        client = create_app(runtime, testing=True).test_client()
        response = client.post("/api/v1/grants", headers={"X-API-Key": api_key}, json={
            "user": {"email": "new.learner@example.com", "first_name": "Анна"},
            "grant": {"term_id": 10, "duration": 1, "units": "month"}, "external_id": "docs-deal-1"})
        assert response.status_code in (200, 201, 202), response.get_data(as_text=True)
        return response.get_json()["grant_id"]
    finally:
        runtime.close()


def run(config: Path, words: list[str]):
    result = CliRunner().invoke(cli, words, env={"MLS_CONFIG": str(config)}, catch_exceptions=True)
    return result


MENTIONS = documented_mentions()


def test_the_docs_show_commands_of_every_capability():
    texts = " ".join(m.text for m in MENTIONS)
    for command in ("doctor", "grants list", "sleepers list", "explain", "remind --dry-run", "programs import",
                    "devstack seed", "db upgrade", "config check"):
        assert f"mlsidecar {command}" in texts, command


@pytest.mark.parametrize("mention", MENTIONS, ids=[f"{m.where} {m.text}" for m in MENTIONS])
def test_documented_command_runs_against_the_demo(mention: Mention, demo: Demo):
    for words in spelled_out(mention.text):
        bare = all(not word.startswith("-") for word in words)
        if tuple(words[:2]) in RUN_UNTIL_STOPPED or tuple(words[:1]) in RUN_UNTIL_STOPPED:
            words = [*[w for w in words if not w.startswith("-")], "--help"]
        words = filled_in(words, demo)
        result = run(demo.config, words)
        if bare and result.exit_code == 2:         # a command named in passing; it wants arguments
            words = [*words, "--help"]
            result = run(demo.config, words)
        refusal = next((text for key, text in REFUSED_IN_THIS_STATE.items()
                        if words[:2] == list(key[:2]) and key[2] in words), None)
        shown = f"{mention.where}: mlsidecar {' '.join(words)} -> exit {result.exit_code}\n{result.output[-3000:]}"
        if result.exception and not isinstance(result.exception, SystemExit):
            shown += "".join(traceback.format_exception(result.exception))
        if refusal:
            assert result.exit_code == 1 and refusal in result.output, shown
        else:
            assert result.exit_code == 0, shown
