"""The configuration reference, generated from the pydantic schema in :mod:`sidecar.config`.

``mlsidecar config reference`` prints it; ``docs/configuration.md`` is its committed output and a
test keeps the two equal, so the reference cannot drift from the code. Everything shown comes from
the schema: keys, types, defaults, ranges (``ge``/``le``/``gt``/``min_length``…), ``Literal``
choices, descriptions, which keys are secrets and the ``MLS_<SECTION>__<KEY>`` override name. Only
the one-line section introductions and the wording of a few named validators live here.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import asdict, dataclass, field
from datetime import datetime, time
from typing import Any, Literal

import annotated_types as at
from pydantic import AfterValidator, BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from sidecar import config
from sidecar.config import ENV_PREFIX, Secret, Settings

#: One line under each section heading (sections have no description in the schema itself).
SECTION_NOTES: dict[str, str] = {
    "wordpress": "The WordPress database, read-only (use the SELECT-only user of `sql/readonly-user.sql`).",
    "memberlux": "MemberLux's REST order endpoint: every change on the site goes through it.",
    "store": "Our own state. Never the WordPress database: the sidecar refuses to start if it is.",
    "smtp": "Outgoing e-mail (reminders, welcome letters, program notices).",
    "bridge": "The grant bridge: CRM requests → grants → orders (docs/grant-bridge.md).",
    "bridge.product_overrides": "Explicit (level, duration, units) → product mappings, checked before product meta. "
                                "Also written inline: `product_overrides = [ { term_id = 12, duration = 6, "
                                "units = \"months\", product_id = 345 } ]`.",
    "bridge.amocrm": "amoCRM webhooks at `/hooks/amocrm/<path_token>` (docs/grant-bridge.md#amocrm).",
    "bridge.welcome_email": "A letter to learners that an order created (MemberLux sends them no password).",
    "schedule": "When the worker's jobs run.",
    "reminders": "Reminder letters to sleepers (docs/reminders.md).",
    "alerts": "A digest e-mail about grants that failed or whose outcome is still unknown past their settle time "
              "(docs/grant-bridge.md#alerts).",
    "webhooks": "Outbound signed events and MemberLux's own webhooks as a source.",
    "webhooks.endpoints": "Endpoints defined in the file (more can be added in the UI). One `[[webhooks.endpoints]]` "
                          "table per endpoint.",
    "web": "`mlsidecar serve`: listen address, URLs, sessions, API tokens.",
    "log": "Log output (stderr) of `serve` and `worker` at this level; the other commands log only "
           "warnings and errors unless run with `mlsidecar -v`.",
}

#: What the named field validators of ``sidecar.config`` accept, in words.
VALIDATOR_TEXT: dict[str, str] = {
    "_check_db_url": "SQLAlchemy URL without a password",
    "_check_prefix": "1–32 letters, digits, `_`",
    "_check_timezone": "IANA zone name (`Europe/Moscow`), or `\"\"` = the site's",
    "_check_schedule_zone": "IANA zone name (`Europe/Moscow`), or `\"site\"` = the site's",
    "_check_template": "Jinja2 template, checked at load",
    "_check_renewal_url": "Jinja2 template, checked at load",
    "_check_address": "one e-mail address, or `\"\"`",
    "_check_sleepers_order": "`\"<column> asc\"` or `\"<column> desc\"`",
    "_http_url": "http(s) URL",
    "_networks": "IP addresses or CIDR networks",
    "_whsec": "starts with `whsec_`, then base64 of 16+ bytes",
    "_strong_key": "32+ characters, 8+ different",
    "_strong_hmac": "32+ characters, 8+ different",
    "_strong_path_token": "32+ characters, 8+ different",
    "_unique_names": "endpoint names unique",
    "_resolve_keys": "names: 1–64 of `A-Z a-z 0-9 _ . -`; values 32+ characters; scopes `grant`, `enrol`",
    "_resolve_tokens": "names: 1–64 of `A-Z a-z 0-9 _ . -`; values 32+ characters; scopes `read`, `enrol`",
    "_resolve_webhook_secrets": "names: 1–64 of `A-Z a-z 0-9 _ . -`; values start with `whsec_`, 16+ bytes",
}

#: Rules that involve several keys of a section (model validators), in words.
MODEL_RULES: dict[str, str] = {
    "_sender_when_enabled": "`from_address` must be an e-mail address when `host` or `pickup_dir` is set.",
    "_complete_when_enabled": "With `enabled = true`: `base_url` (http(s) URL), `token` and `path_token` "
                              "are required.",
    "_retry_order": "`retry_max_seconds` must not be smaller than `retry_base_seconds`.",
}

SECRET_NAMES = "name = secret"  # noqa: S105 - how the reference shows a map of secrets, not one


@dataclass(frozen=True)
class Entry:
    key: str
    type: str
    default: str | None          # TOML text; None = required
    allowed: str
    secret: bool
    env: str | None              # None: set only through the enclosing array
    description: str
    long_default: str | None = None   # a default too long for the table, shown in full below it


@dataclass
class Section:
    path: str                    # "bridge.amocrm", "webhooks.endpoints"
    array: bool                  # an array of tables ([[...]])
    required: bool
    note: str
    entries: list[Entry] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)

    @property
    def heading(self) -> str:
        return f"[[{self.path}]]" if self.array else f"[{self.path}]"


# --- schema walk ------------------------------------------------------------------------------------

def _model_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _list_model(annotation: Any) -> type[BaseModel] | None:
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return _model_of(item)
    return None


def _is_secret(info: FieldInfo) -> bool:
    return bool((info.json_schema_extra or {}).get("secret")) if isinstance(info.json_schema_extra, dict) else False


def _is_secret_table(annotation: Any) -> bool:
    return typing.get_origin(annotation) is dict and typing.get_args(annotation)[1:] == (Secret,)


def _union_args(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _strip(annotation: Any) -> tuple[Any, list[Any]]:
    """The bare type of an ``Annotated[...]`` and its metadata."""
    if typing.get_origin(annotation) is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        return base, metadata
    return annotation, []


_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean",
            time: "time of day", datetime: "date-time"}


def _type_name(annotation: Any) -> str:
    if _is_secret_table(annotation):
        return f"table ({SECRET_NAMES})"
    names: list[str] = []
    for arg in _union_args(annotation):
        arg, _ = _strip(arg)
        if arg is type(None):
            continue
        if arg is Secret:
            name = "secret"
        elif typing.get_origin(arg) is Literal:
            name = "string" if all(isinstance(v, str) for v in typing.get_args(arg)) else "value"
        elif typing.get_origin(arg) is list:
            (item,) = typing.get_args(arg)
            name = "array of tables" if _model_of(item) else f"array of {_type_name(item)}s"
        else:
            name = _SCALARS.get(arg, getattr(arg, "__name__", str(arg)))
        if name not in names:
            names.append(name)
    return " or ".join(names)


def _number(value: Any) -> str:
    return f"{value:,}".replace(",", " ") if isinstance(value, int) and abs(value) >= 10_000 else str(value)


def _range(metadata: list[Any]) -> list[str]:
    bounds: dict[str, Any] = {}
    parts: list[str] = []
    for item in metadata:
        if isinstance(item, at.Ge):
            bounds["ge"] = item.ge
        elif isinstance(item, at.Gt):
            bounds["gt"] = item.gt
        elif isinstance(item, at.Le):
            bounds["le"] = item.le
        elif isinstance(item, at.Lt):
            bounds["lt"] = item.lt
        elif isinstance(item, at.MinLen):
            bounds["min_length"] = item.min_length
        elif isinstance(item, at.MaxLen):
            bounds["max_length"] = item.max_length
    if "min_length" in bounds and "max_length" in bounds:
        parts.append(f"{bounds.pop('min_length')} … {bounds.pop('max_length')} characters")
    elif "min_length" in bounds:
        parts.append(f"at least {bounds.pop('min_length')} characters")
    elif "max_length" in bounds:
        parts.append(f"at most {bounds.pop('max_length')} characters")
    if "ge" in bounds and "le" in bounds:
        numbers = [f"{_number(bounds['ge'])} … {_number(bounds['le'])}"]
    else:
        signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
        numbers = [f"{signs[k]} {_number(v)}" for k, v in bounds.items()]
    return [", ".join(numbers)] + parts if numbers else parts


def _allowed(info: FieldInfo, validators: list[str]) -> str:
    parts = _range(list(info.metadata))
    literals: list[str] = []
    for arg in _union_args(info.annotation):
        base, metadata = _strip(arg)
        if typing.get_origin(base) is Literal:
            literals += [json.dumps(v, ensure_ascii=False) for v in typing.get_args(base)]
        for item in [*metadata, *info.metadata]:
            if isinstance(item, AfterValidator):
                text = VALIDATOR_TEXT.get(item.func.__name__)
                if text and "{default}" in text:
                    text = text.format(default=json.dumps(info.default))
                if text and text not in parts:
                    parts.append(text)
    if literals:
        parts.insert(0, ", ".join(f"`{v}`" for v in literals))
    for name in validators:
        text = VALIDATOR_TEXT.get(name)
        if name == "_known_events":
            text = "`\"*\"` or any of " + ", ".join(f"`{e}`" for e in config.WEBHOOK_EVENTS)
        if text and text not in parts:
            parts.append(text)
    return "; ".join(parts)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, time):
        return value.isoformat()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}" if value else "{}"
    if isinstance(value, BaseModel):
        return "(see the section)"
    return str(value)


def _default(info: FieldInfo) -> tuple[str | None, str | None]:
    """(short TOML text or None when required, the full text when too long for a table cell)."""
    if info.is_required():
        return None, None
    value = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    if value is None or value is PydanticUndefined:
        return "unset", None
    text = _toml(value)
    if isinstance(value, str) and ("\n" in value or len(text) > 48):
        return "built-in, below", value
    return text, None


def _field_validators(model: type[BaseModel]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, decorator in model.__pydantic_decorators__.field_validators.items():
        for field_name in decorator.info.fields:
            if field_name != "*":
                found.setdefault(field_name, []).append(name)
    return found


def _walk(model: type[BaseModel], path: str, env: str | None, *, array: bool, required: bool,
          out: list[Section]) -> None:
    section = Section(path, array, required, SECTION_NOTES.get(path, ""))
    out.append(section)
    section.rules = [MODEL_RULES[name] for name in model.__pydantic_decorators__.model_validators if name in MODEL_RULES]
    validators = _field_validators(model)
    later: list[tuple[type[BaseModel], str, str | None, bool, bool]] = []
    for name, info in model.model_fields.items():
        key_env = f"{env}__{name.upper()}" if env else None
        nested = _model_of(info.annotation)
        if nested is not None:
            later.append((nested, f"{path}.{name}", key_env, False, info.is_required()))
            continue
        item_model = _list_model(info.annotation)
        if item_model is not None:
            later.append((item_model, f"{path}.{name}", None, True, False))
        default, long_default = _default(info)
        secret_table = _is_secret_table(info.annotation)
        env_name = key_env
        if env_name and secret_table:
            env_name += "__<NAME>"
        description = info.description or ""
        if item_model is not None:
            description += f" See [[{path}.{name}]] below; from the environment only as a whole TOML array."
        section.entries.append(Entry(
            key=name, type=_type_name(info.annotation), default=default,
            allowed=_allowed(info, validators.get(name, [])), secret=_is_secret(info) or secret_table,
            env=env_name, description=description.strip(), long_default=long_default))
    for nested, nested_path, nested_env, is_array, is_required in later:
        _walk(nested, nested_path, nested_env, array=is_array, required=is_required, out=out)


def sections() -> list[Section]:
    """Every section of the schema in file order, nested tables after their parent."""
    out: list[Section] = []
    for name, info in Settings.model_fields.items():
        model = _model_of(info.annotation)
        assert model is not None, f"top-level setting {name} is not a section"
        _walk(model, name, f"{ENV_PREFIX}{name.upper()}", array=False, required=info.is_required(), out=out)
    return out


# --- rendering -------------------------------------------------------------------------------------------

INTRO = """\
# Configuration reference

<!-- Generated by `mlsidecar config reference` from the schema in sidecar/config.py; do not edit by hand.
     Regenerate: .venv/bin/mlsidecar config reference > docs/configuration.md
     (tests/cli/test_config_reference.py fails while this file differs from the generated text). -->

One TOML file: `--config PATH`, else `$MLS_CONFIG`, else `./mlsidecar.toml`, else
`/etc/mlsidecar/mlsidecar.toml`. Start from `config.example.toml`; check with `mlsidecar config check`.
Unknown keys and bad values stop every command with exit code 2 and one line per offending key
(secrets are never echoed).

* **Secrets** (column *Secret*) take a literal, `env:VARIABLE` (the variable must be set and
  non-empty) or `file:/path` (first line, trailing whitespace removed). Prefer `env:`/`file:` so the
  file itself holds no secret; with systemd, put the variables in an `EnvironmentFile` readable by
  root only (docs/deployment.md).
* **Environment overrides**: any key can be set with `MLS_<SECTION>__<KEY>`, one `__` per level
  (`MLS_LOG__FORMAT=json`, `MLS_BRIDGE__AMOCRM__ENABLED=true`). The value is read as a TOML literal
  when it is one (`5`, `true`, `["a", "b"]`, `09:30:00`), else as a string. Names of a
  *name = secret* table are separate keys (`MLS_WEB__API_TOKENS__REPORTS=env:REPORTS_TOKEN`; the name
  arrives lower-cased). Arrays of tables can only be replaced whole (`MLS_WEBHOOKS__ENDPOINTS='[{name
  = "crm", url = "https://…"}]'`). A variable naming an unknown section is an error; unknown keys are
  reported like unknown keys in the file.
* **Default** *required*: the key has no default; *unset*: empty (a secret not given, a feature off).
  Durations are in the unit their name says; days are UTC calendar days unless stated.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown() -> str:
    lines = [INTRO]
    for section in sections():
        lines.append(f"## `{section.heading}`")
        lines.append("")
        notes = [section.note] if section.note else []
        if section.required:
            notes.append("This section is required.")
        if section.array:
            notes.append("Keys below are per entry; an entry has no environment override of its own.")
        if notes:
            lines.append(" ".join(notes))
            lines.append("")
        lines.append("| Key | Type | Default | Allowed | Secret | Environment variable | Description |")
        lines.append("|---|---|---|---|---|---|---|")
        for e in section.entries:
            default = "*required*" if e.default is None else ("*unset*" if e.default == "unset" else
                                                              ("*" + e.default + "*" if e.long_default else f"`{e.default}`"))
            lines.append("| " + " | ".join([
                f"`{e.key}`", e.type, default, _cell(e.allowed), "yes" if e.secret else "",
                f"`{e.env}`" if e.env else "—", _cell(e.description)]) + " |")
        lines.append("")
        for rule in section.rules:
            lines.append(f"Rule: {rule}")
            lines.append("")
        for e in section.entries:
            if e.long_default is not None:
                lines.append(f"Default of `{e.key}`:")
                lines.append("")
                lines.append("```jinja")
                lines.append(e.long_default.rstrip("\n"))
                lines.append("```")
                lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def render_json() -> str:
    """The same content for tools: ``default`` is TOML text, or null when required or unset."""

    def key(e: Entry) -> dict[str, Any]:
        record = asdict(e)
        record.pop("long_default")
        record["required"] = e.default is None
        record["default"] = e.long_default if e.long_default is not None else (
            None if e.default in (None, "unset") else e.default)
        return record

    data = [{"section": s.path, "array": s.array, "required": s.required, "note": s.note, "rules": s.rules,
             "keys": [key(e) for e in s.entries]} for s in sections()]
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def render(fmt: str = "markdown") -> str:
    return render_json() if fmt == "json" else render_markdown()


__all__ = ["Entry", "Section", "sections", "render", "render_markdown", "render_json"]
