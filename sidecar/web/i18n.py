"""Russian and English for every string the web UI shows: gettext with English msgids.

Templates and Python call ``_``/``gettext``, ``pgettext`` (one English text, two Russian ones), ``ngettext``
(counts) with literal English texts; ``pybabel extract -F babel.cfg`` finds them all, and the Russian lives
in sidecar/web/translations/ru/LC_MESSAGES/messages.po. tests/web/test_i18n.py extracts the texts and fails
on any without a Russian translation (or with other placeholders), so a missing one never reaches a page.
Placeholders are ``{name}`` (str.format). Dates and numbers are written by Babel in the language's way.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from functools import cache
from importlib import resources
from io import BytesIO
from typing import Any

from babel import Locale
from babel import dates as babel_dates
from babel import numbers as babel_numbers
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from flask import Flask, g, request
from flask_babel import Babel
from markupsafe import Markup
from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header


LANGUAGES = ("ru", "en")
DEFAULT_LANGUAGE = "en"
COOKIE = "mls_lang"


# --- gettext catalogs ----------------------------------------------------------------------------------
# The msgids are the English texts; sidecar/web/translations/<language>/LC_MESSAGES/messages.po holds the
# other languages. The .po files are the only source: they are compiled in memory when first needed, so no
# stale .mo can ever be read (pip install -e, a wheel and a fresh clone behave the same).

DOMAIN = "messages"


@cache
def catalog(language: str) -> NullTranslations:
    """The compiled catalog of ``language``; English (the msgids) and an unknown language need none."""
    source = resources.files("sidecar.web").joinpath("translations", language, "LC_MESSAGES", f"{DOMAIN}.po")
    if language == DEFAULT_LANGUAGE or not source.is_file():
        return NullTranslations()
    with source.open("rb") as po:
        messages = read_po(po, locale=language, domain=DOMAIN)
    compiled = BytesIO()
    write_mo(compiled, messages)  # fuzzy entries are left out, as msgfmt does
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def _fill(text: str, values: dict[str, object]) -> str:
    return text.format(**values) if values else text


def gettext(message: str, language: str | None = None, **values: object) -> str:
    """``message`` (an English msgid) in ``language`` (default: the page's), ``{name}`` placeholders filled."""
    return _fill(catalog(language or current_language()).gettext(message), values)


def pgettext(context: str, message: str, language: str | None = None, **values: object) -> str:
    """:func:`gettext` for an English text that needs another translation in ``context``."""
    return _fill(catalog(language or current_language()).pgettext(context, message), values)


def ngettext(singular: str, plural: str, n: int, language: str | None = None, **values: object) -> str:
    """The form of ``singular``/``plural`` for the count ``n`` by the language's plural rule; ``{n}`` is ``n``."""
    values.setdefault("n", n)
    return _fill(catalog(language or current_language()).ngettext(singular, plural, n), values)


def npgettext(context: str, singular: str, plural: str, n: int, language: str | None = None, **values: object) -> str:
    values.setdefault("n", n)
    return _fill(catalog(language or current_language()).npgettext(context, singular, plural, n), values)


def markup_gettext(message: str, language: str | None = None, **values: object) -> Markup:
    """:func:`gettext` for a sentence with markup in its values (a command in ``<code>``): the catalog's text
    is escaped, and so is every value that is not already :class:`~markupsafe.Markup`."""
    return Markup.escape(catalog(language or current_language()).gettext(message)).format(**values)


def markup_pgettext(context: str, message: str, language: str | None = None, **values: object) -> Markup:
    return Markup.escape(catalog(language or current_language()).pgettext(context, message)).format(**values)


class LazyText:
    """A text translated each time it is shown (in the language of that moment), for tables built at import
    time: ``{code: lazy_gettext("...")}``. ``str()`` gives the text; ``format(...)`` fills its placeholders."""

    __slots__ = ("_lookup",)

    def __init__(self, lookup: Callable[..., str]) -> None:
        self._lookup = lookup

    def __str__(self) -> str:
        return self._lookup(None)

    def format(self, language: str | None = None, **values: object) -> str:
        return self._lookup(language, **values)

    def __eq__(self, other: object) -> bool:
        return str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return f"LazyText({str(self)!r})"


def lazy_gettext(message: str) -> LazyText:
    return LazyText(lambda language, **values: gettext(message, language, **values))


def lazy_pgettext(context: str, message: str) -> LazyText:
    return LazyText(lambda language, **values: pgettext(context, message, language, **values))


# --- dates and numbers in the language's own way ----------------------------------------------------------

def format_date(value: date | datetime | None, format: str = "medium", language: str | None = None) -> str:
    """A day as the language writes it: ``format`` is a CLDR width (short, medium, long, full) or pattern;
    ``format_date(day, "long", "ru")`` is «26 ноября 2026 г.», ``format_date(day, "d MMMM y", "ru")`` is
    «26 ноября 2026», and in English ``"MMMM d, y"`` is "November 26, 2026"."""
    if value is None:
        return "—"
    return babel_dates.format_date(value, format, locale=_locale(language))


def format_number(value: float, language: str | None = None) -> str:
    """A number with the language's digit grouping and decimal sign (12 345,5 in Russian)."""
    return babel_numbers.format_decimal(value, locale=_locale(language))


def _locale(language: str | None) -> Locale:
    return Locale.parse(language or current_language())


# --- which language a request gets -----------------------------------------------------------------------

def negotiate(accept_language: str | None, explicit: str | None) -> str:
    """An explicit choice (?lang=, the cookie) if it is a language of the UI, else the browser's best
    offer by werkzeug's Accept-Language parsing (ru-RU counts as ru), else English."""
    if explicit in LANGUAGES:
        return str(explicit)
    offered = parse_accept_header(accept_language, LanguageAccept)
    return str(offered.best_match(LANGUAGES, default=DEFAULT_LANGUAGE))


def current_language() -> str:
    try:
        return str(g.language)
    except (AttributeError, RuntimeError):
        return DEFAULT_LANGUAGE


# The names the templates call; the same functions Python code imports from here.
TEMPLATE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "_": gettext, "gettext": gettext, "pgettext": pgettext, "ngettext": ngettext, "npgettext": npgettext,
    "_m": markup_gettext, "markup_pgettext": markup_pgettext,
    "format_date": format_date, "format_number": format_number,
}


def init_app(app: Flask) -> None:
    # Flask-Babel knows the request's locale (flask_babel.get_locale) from the same choice; the templates'
    # functions are ours (str.format placeholders, a language argument for letters and the CLI).
    Babel(app, locale_selector=current_language, configure_jinja=False)
    app.jinja_env.globals.update(TEMPLATE_FUNCTIONS)

    @app.before_request
    def _pick_language() -> None:
        chosen = request.args.get("lang")
        g.language = negotiate(request.headers.get("Accept-Language"),
                               chosen if chosen in LANGUAGES else request.cookies.get(COOKIE))

    @app.after_request
    def _remember_language(response):
        chosen = request.args.get("lang")
        if chosen in LANGUAGES:
            response.set_cookie(COOKIE, chosen, max_age=365 * 24 * 3600, samesite="Lax", httponly=True)
        response.headers["Content-Language"] = g.get("language", DEFAULT_LANGUAGE)
        return response

    @app.context_processor
    def _inject():
        return {"language": current_language(), "languages": LANGUAGES}
