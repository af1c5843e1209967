"""Body templates: an endpoint that wants another body than the standard event — a Telegram bot's
``sendMessage``, a chat or CRM API that takes a fixed JSON shape — gets one built from a template.

A template is a **JSON document** (an object or an array) written by an administrator:

* keys, numbers, booleans and nulls are sent as written;
* every string is a Jinja2 template, rendered in the bounded sandbox of :mod:`sidecar.mail.templates`
  (no access to the process, limits on output and work) with two variables: ``event`` (the standard
  body: ``id``, ``type``, ``timestamp``, ``data``) and ``data`` (its ``data``);
* a string that is a single expression and nothing else, ``"{{ data.user_id }}"``, becomes that value
  with its JSON type (a number stays a number, null stays null); any other string becomes text.

**No injection.** The document is parsed first and rebuilt as data; each rendered value is put in its
own place and the whole is serialised with ``json.dumps``. An event value — an e-mail with a quote, a
name with braces or ``{{ … }}`` in it — can only ever be the content of its string: it cannot add a
key, end the string or be evaluated again.

A missing field is an error (``{{ data.email | default('') }}`` for a field some events lack). A
template is refused when it is saved if it is not such a document, does not compile, or fails to
render an example of any event type the endpoint receives or of the ``webhook.test`` event, which
the UI's «send test event» delivers to the endpoint whatever its filter (:mod:`sidecar.webhooks.samples`). At
delivery a failure to render is a failed attempt with the reason, retried on the usual schedule, so
correcting the template lets the waiting deliveries through.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from sidecar.mail.templates import TemplateError, check as check_syntax, evaluate, render_text
from sidecar.webhooks.samples import SAMPLE_DATA, TEST_EVENT, sample_body

__all__ = ["MAX_TEMPLATE", "MAX_BODY", "BodyTemplateError", "parse", "render", "check"]

MAX_TEMPLATE = 10_000
MAX_BODY = 64 * 1024
_WHOLE = re.compile(r"\A\s*\{\{(?P<expr>.*)\}\}\s*\Z", re.S)


class BodyTemplateError(ValueError):
    pass


def _strings(node: Any, path: str = "$") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node


def _single_expression(text: str) -> str | None:
    found = _WHOLE.match(text)
    if found is None:
        return None
    expression = found["expr"]
    return None if "{{" in expression or "}}" in expression or "{%" in text else expression


def parse(source: str) -> Any:
    """The template's JSON document, its strings checked for Jinja2 syntax."""
    if len(source) > MAX_TEMPLATE:
        raise BodyTemplateError(f"a template has at most {MAX_TEMPLATE} characters")
    try:
        document = json.loads(source)
    except ValueError as exc:
        raise BodyTemplateError(f"not a JSON document ({exc})") from None
    if not isinstance(document, (dict, list)):
        raise BodyTemplateError("the template must be a JSON object or array")
    for path, text in _strings(document):
        expression = _single_expression(text)
        try:
            check_syntax("{{ " + expression + " }}" if expression is not None else text)
        except TemplateError as exc:
            raise BodyTemplateError(f"{path}: {exc}") from None
    return document


def _json_value(value: Any, path: str) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise BodyTemplateError(f"{path}: the value ({type(value).__name__}) cannot be sent as JSON") from None
    return value


def _render_node(node: Any, variables: dict[str, Any], path: str) -> Any:
    if isinstance(node, dict):
        return {key: _render_node(value, variables, f"{path}.{key}") for key, value in node.items()}
    if isinstance(node, list):
        return [_render_node(value, variables, f"{path}[{index}]") for index, value in enumerate(node)]
    if not isinstance(node, str):
        return node
    expression = _single_expression(node)
    try:
        if expression is not None:
            return _json_value(evaluate(expression, variables), path)
        return render_text(node, variables)
    except TemplateError as exc:
        raise BodyTemplateError(f"{path}: {exc}") from None


def render(source: str, event_body: dict[str, Any]) -> bytes:
    """The body for one event (its standard body), as UTF-8 JSON."""
    document = parse(source)
    variables = {"event": event_body, "data": event_body.get("data") or {}}
    payload = json.dumps(_render_node(document, variables, "$"), ensure_ascii=False,
                         separators=(",", ":")).encode("utf-8")
    if len(payload) > MAX_BODY:
        raise BodyTemplateError(f"the rendered body exceeds {MAX_BODY // 1024} KB")
    return payload


def check(source: str, events: Iterable[str]) -> None:
    """Refuse a template that would fail for an event the endpoint receives (``*`` = every type) or for
    the ``webhook.test`` event, which an endpoint receives whatever its filter."""
    parse(source)
    wanted = list(events) or ["*"]
    types = [t for t in SAMPLE_DATA if t != TEST_EVENT] if "*" in wanted else [t for t in wanted if t in SAMPLE_DATA]
    types = [t for t in types if t != TEST_EVENT] + [TEST_EVENT]
    for event_type in types:
        try:
            render(source, sample_body(event_type))
        except BodyTemplateError as exc:
            raise BodyTemplateError(f"with a {event_type} event: {exc}") from None
