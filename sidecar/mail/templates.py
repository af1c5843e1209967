"""E-mail templates rendered in Jinja2's sandbox: stored texts come from admins and CRMs, so a
template can read the variables it is given and nothing else of the process."""

from __future__ import annotations

import html
import re
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

_html_env = ImmutableSandboxedEnvironment(autoescape=True, undefined=StrictUndefined)
_text_env = ImmutableSandboxedEnvironment(autoescape=False, undefined=StrictUndefined)


class TemplateError(ValueError):
    """A template that cannot be used; ``line`` is 1-based when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


def check(source: str) -> None:
    try:
        _html_env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(exc.message or "syntax error", exc.lineno) from None


def render_html(source: str, variables: dict[str, Any]) -> str:
    try:
        return _html_env.from_string(source).render(**variables)
    except TemplateSyntaxError as exc:
        raise TemplateError(exc.message or "syntax error", exc.lineno) from None
    except Exception as exc:  # noqa: BLE001 - undefined variables, sandbox refusals
        raise TemplateError(str(exc)) from None


def render_text(source: str, variables: dict[str, Any]) -> str:
    try:
        return _text_env.from_string(source).render(**variables)
    except TemplateSyntaxError as exc:
        raise TemplateError(exc.message or "syntax error", exc.lineno) from None
    except Exception as exc:  # noqa: BLE001
        raise TemplateError(str(exc)) from None


def html_to_text(markup: str) -> str:
    """A readable plain-text part from HTML: links kept as 'text (url)', tags dropped."""
    text = re.sub(r'<a\s[^>]*href="([^"]+)"[^>]*>(.*?)</a>', r"\2 (\1)", markup, flags=re.I | re.S)
    text = re.sub(r"</t[dh]>\s*", "  ", text, flags=re.I)
    text = re.sub(r"<(br|/p|/div|/li|/h\d|/tr)\s*/?>", "\n", text, flags=re.I)
    text = re.sub(r"<[^>]+>", "", text)
    text = html.unescape(text)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(line.strip() for line in text.splitlines())).strip()
