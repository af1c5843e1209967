"""E-mail templates rendered in Jinja2's sandbox: stored texts come from admins and CRMs, so a
template can read the variables it is given and nothing else of the process.

**Bounded rendering.** The sandbox keeps a template from reaching the process, not from using it up:
``{{ 'a'*20000000 }}`` made 20 MB and ``{{ ('a'*2000000)|wordwrap(1) }}`` held a web thread for
minutes. Rendering here is bounded, far above what a real letter needs:

* the rendered output is at most :data:`MAX_OUTPUT` characters (256 KB; a long letter is ~20 KB):
  the template is rendered piece by piece and stopped as soon as it is longer;
* no value a template builds (``*``, ``+``, ``%``, string methods, filters) may exceed
  :data:`MAX_VALUE` characters or items, and this is checked *before* the value is built where the
  size is known in advance; ``**`` is limited to :data:`MAX_INT_BITS`-bit results; ``range`` gives at
  most :data:`MAX_RANGE` numbers;
* filters whose work grows faster than their input (``wordwrap``, ``center``, ``indent``, ``format``,
  ``replace``, ``batch``, ``slice``) refuse arguments that would make them expensive;
* every loop iteration, call and operator counts against a budget of :data:`MAX_WORK` steps per
  rendering (nested loops that print nothing are stopped too).

Going over a limit raises :class:`TemplateLimitExceeded` (a :class:`TemplateError`): the preview shows
"template output exceeds 256 KB" or "too much work", and the sending run fails that letter with the
reason instead of crashing.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from sidecar.domain.messages import Message

MAX_OUTPUT = 256 * 1024
MAX_VALUE = 256 * 1024
MAX_RANGE = 10_000
MAX_INT_BITS = 4096
MAX_WORK = 1_000_000
# Widths written into a format string ("%999999s", "{:>999999}"): six digits are no letter's layout.
_HUGE_WIDTH = re.compile(r"\d{6,}|\*")


class TemplateError(ValueError):
    """A template that cannot be used; ``line`` is 1-based when known, ``said`` is the reason as a
    message for the pages (its English is ``message``)."""

    def __init__(self, message: str, line: int | None = None, *, said: Message | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line
        self.said = said or Message("templates.failed", {"detail": message})


class TemplateLimitExceeded(TemplateError):
    """The template would make too large an output or value, or do too much work."""


TOO_LARGE_SAID = Message("templates.too_large", {"kb": MAX_OUTPUT // 1024})
TOO_MUCH_WORK_SAID = Message("templates.too_much_work")
TOO_LARGE = TOO_LARGE_SAID.english()
TOO_MUCH_WORK = TOO_MUCH_WORK_SAID.english()


def _too_large() -> TemplateLimitExceeded:
    return TemplateLimitExceeded(TOO_LARGE, said=TOO_LARGE_SAID)


def syntax_error(exc: TemplateSyntaxError) -> TemplateError:
    """Jinja's syntax error as ours, its words kept as the reason."""
    detail = exc.message or "syntax error"
    return TemplateError(detail, exc.lineno, said=Message("templates.syntax", {"detail": detail}))

_budget: ContextVar[list[int] | None] = ContextVar("template_work_budget", default=None)
_T = TypeVar("_T")


def _tick(steps: int = 1) -> None:
    budget = _budget.get()
    if budget is not None:
        budget[0] -= steps
        if budget[0] < 0:
            raise TemplateLimitExceeded(TOO_MUCH_WORK, said=TOO_MUCH_WORK_SAID)


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)) else 0


def _bounded(value: Any) -> Any:
    if _size(value) > MAX_VALUE:
        raise _too_large()
    return value


def _refuse_if(condition: bool) -> None:
    if condition:
        raise _too_large()


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        for sequence, count in ((left, right), (right, left)):
            if _size(sequence) and _is_count(count):
                _refuse_if(_size(sequence) * count > MAX_VALUE)
        if _is_count(left) and _is_count(right):
            _refuse_if(abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS)
    elif operator == "+":
        _refuse_if(_size(left) + _size(right) > MAX_VALUE)
    elif operator == "**":
        if _is_count(left) and _is_count(right):
            _refuse_if(right > 0 and max(abs(left).bit_length() - 1, 0) * right > MAX_INT_BITS)
        elif isinstance(left, float) or isinstance(right, float):
            pass                                            # floats overflow to an error, not to a huge value
    elif operator == "%" and isinstance(left, str):
        _check_format(left, right if isinstance(right, tuple) else (right,))


def _check_format(template: str, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None) -> None:
    _refuse_if(bool(_HUGE_WIDTH.search(template)) and any(
        _is_count(a) and abs(a) > MAX_VALUE for a in [*args, *(kwargs or {}).values()]))
    _refuse_if(bool(re.search(r"\d{6,}", template)))


def _check_str_call(name: str, text: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    values = [*args, *kwargs.values()]
    if name in ("center", "ljust", "rjust", "zfill"):
        _refuse_if(any(_is_count(v) and v > MAX_VALUE for v in values))
    elif name == "expandtabs":
        size = next((v for v in values if _is_count(v)), 8)
        _refuse_if(len(text) + text.count("\t") * max(size, 0) > MAX_VALUE)
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        hits = text.count(args[0]) if args[0] else len(text) + 1
        _refuse_if(len(text) + hits * len(args[1]) > MAX_VALUE)
    elif name in ("format", "format_map"):
        _check_format(text, args, kwargs)
    elif name == "join":
        _refuse_if(len(text) * _size(args[0] if args else "") > MAX_VALUE)


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        said = Message("templates.range_too_long", {"max": MAX_RANGE})
        raise TemplateLimitExceeded(said.english(), said=said)
    return numbers


def _counted(iterable: Any) -> Iterator[Any]:
    """Every loop iteration is a step of work (the loop's iterable goes through this filter)."""
    for item in iterable:
        _tick()
        yield item


def _wrap(original: Callable[..., Any], check: Callable[[tuple[Any, ...], dict[str, Any]], None]) -> Callable[..., Any]:
    @functools.wraps(original)  # keeps Jinja's pass_environment / pass_eval_context marker
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        check(args, kwargs)
        return _bounded(original(*args, **kwargs))
    return bounded


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _check_wordwrap(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # textwrap cuts a long word by copying its rest each time: the work is about len² / width.
    text, width = str(_arg(args, kwargs, 1, "s", "")), _arg(args, kwargs, 2, "width", 79)
    width = width if _is_count(width) and width > 0 else 1
    _refuse_if(len(text) * len(text) // width > 50_000_000)


def _check_center(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    width = _arg(args, kwargs, 1, "width", 80)
    _refuse_if(_is_count(width) and width > MAX_VALUE)


def _check_indent(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    text, width = str(_arg(args, kwargs, 0, "s", "")), _arg(args, kwargs, 1, "width", 4)
    step = width if _is_count(width) else len(str(width))
    _refuse_if(len(text) + (text.count("\n") + 1) * max(step, 0) > MAX_VALUE)


def _check_format_filter(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    _check_format(str(args[0]) if args else "", args[1:], kwargs)


def _check_replace(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    text, old, new = (str(_arg(args, kwargs, i, n, "")) for i, n in ((1, "s"), (2, "old"), (3, "new")))
    hits = text.count(old) if old else len(text) + 1
    _refuse_if(len(text) + hits * len(new) > MAX_VALUE)


def _check_pieces(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    count = _arg(args, kwargs, 1, "linecount", None)
    if count is None:
        count = kwargs.get("slices")
    _refuse_if(_is_count(count) and count > MAX_VALUE)


_FILTER_CHECKS = {"wordwrap": _check_wordwrap, "center": _check_center, "indent": _check_indent,
                  "format": _check_format_filter, "replace": _check_replace, "batch": _check_pieces,
                  "slice": _check_pieces}


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with size and work limits (see the module's docstring)."""

    intercepted_binops = frozenset({"*", "+", "**", "%", "//"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        for name, check in _FILTER_CHECKS.items():
            self.filters[name] = _wrap(self.filters[name], check)
        self.filters["_counted"] = _counted
        self.globals["range"] = _bounded_range

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "_counted", [], [], None, None, lineno=loop.lineno)
        return tree

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _tick()
        _check_binop(operator, left, right)
        return _bounded(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's own signature
        _tick()
        return _bounded(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        # String methods are checked where they are looked up: a call need not pass through call().
        value = super().getattr(obj, attribute)
        if isinstance(obj, str) and attribute in _STR_METHODS and callable(value):
            return _bounded_method(value, attribute, obj)
        return value

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        return _bounded_method(wrapped, value.__name__, value.__self__)


_STR_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "replace", "join", "format", "format_map"})


def _bounded_method(method: Callable[..., Any], name: str, text: str) -> Callable[..., Any]:
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_str_call(name, text, args, kwargs)
        return _bounded(method(*args, **kwargs))
    return bounded


_html_env = BoundedSandbox(autoescape=True, undefined=StrictUndefined)
_text_env = BoundedSandbox(autoescape=False, undefined=StrictUndefined)


def _render(env: BoundedSandbox, source: str, variables: dict[str, Any]) -> str:
    """Render piece by piece, stopping once the output passes :data:`MAX_OUTPUT` or the work budget is spent."""
    token = _budget.set([MAX_WORK])
    try:
        pieces: list[str] = []
        length = 0
        for piece in env.from_string(source).generate(**variables):
            length += len(piece)
            if length > MAX_OUTPUT:
                raise _too_large()
            pieces.append(piece)
        return "".join(pieces)
    finally:
        _budget.reset(token)


def check(source: str) -> None:
    try:
        _html_env.parse(source)
    except TemplateSyntaxError as exc:
        raise syntax_error(exc) from None


def _guarded(work: Callable[[], _T]) -> _T:
    """Run one rendering step: whatever goes wrong in a template is a :class:`TemplateError`."""
    try:
        return work()
    except TemplateError:
        raise
    except TemplateSyntaxError as exc:
        raise syntax_error(exc) from None
    except MemoryError:
        raise _too_large() from None
    except UndefinedError as exc:
        raise TemplateError(str(exc), said=Message("templates.undefined", {"detail": str(exc)})) from None
    except Exception as exc:  # noqa: BLE001 - sandbox refusals and the like
        raise TemplateError(str(exc)) from None


def render_html(source: str, variables: dict[str, Any]) -> str:
    return _guarded(lambda: _render(_html_env, source, variables))


def render_text(source: str, variables: dict[str, Any]) -> str:
    return _guarded(lambda: _render(_text_env, source, variables))


def evaluate(expression: str, variables: dict[str, Any]) -> Any:
    """The value of one Jinja2 expression (no ``{{ }}``) in the text sandbox, under the same limits.

    An undefined name or attribute is an error, as in the templates; the value keeps its type.
    """

    def value() -> Any:
        found = _text_env.compile_expression(expression, undefined_to_none=False)(**variables)
        if isinstance(found, Undefined):
            str(found)  # a StrictUndefined names what is missing
            raise TemplateError("undefined value", said=Message("templates.undefined_value"))
        return _bounded(found)

    token = _budget.set([MAX_WORK])
    try:
        return _guarded(value)
    finally:
        _budget.reset(token)


def html_to_text(markup: str) -> str:
    """A readable plain-text part from HTML: links kept as 'text (url)', tags dropped."""
    text = re.sub(r'<a\s[^>]*href="([^"]+)"[^>]*>(.*?)</a>', r"\2 (\1)", markup, flags=re.I | re.S)
    text = re.sub(r"</t[dh]>\s*", "  ", text, flags=re.I)
    text = re.sub(r"<(br|/p|/div|/li|/h\d|/tr)\s*/?>", "\n", text, flags=re.I)
    text = re.sub(r"<[^>]+>", "", text)
    text = html.unescape(text)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(line.strip() for line in text.splitlines())).strip()
