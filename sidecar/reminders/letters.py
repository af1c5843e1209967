"""Reminder letters: the variables a template may use, legacy tokens, checking and rendering.

Templates are Jinja2 in the sandbox (:mod:`sidecar.mail.templates`): the HTML body is autoescaped,
the subject and the plain-text part are not. Bodies stored by the legacy plugin keep working: its
advertised tokens ``[user_email]`` … (legacy-plugins.md §3.5) are read as ``{{ user_email }}``, which
is also the other syntax in circulation, so both render the same.

A template is checked when it is saved — syntax, and every variable it uses must be one of
:data:`LEARNER_VARIABLES` (or :data:`DIGEST_VARIABLES` for the admin letter) — so a mistake is
refused with its line, never found at send time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, meta
from markupsafe import Markup, escape

from sidecar.domain.messages import Message
from sidecar.mail.templates import TemplateError, _html_env, html_to_text, render_html, render_text, syntax_error
from sidecar.web.i18n import pgettext

# name -> (English, Russian) meaning; the UI and docs/reminders.md list them.
LEARNER_VARIABLES: dict[str, tuple[str, str]] = {
    "user_id": ("the learner's WordPress user id", "ID пользователя WordPress"),
    "user_email": ("the learner's e-mail address", "e-mail ученика"),
    "user_login": ("the learner's WordPress login", "логин ученика в WordPress"),
    "first_name": ("first name (profile)", "имя (из профиля)"),
    "last_name": ("last name (profile)", "фамилия (из профиля)"),
    "display_name": ("display name (profile)", "отображаемое имя (из профиля)"),
    "course_name": ("name of the access level", "название уровня доступа"),
    "level_id": ("term id of the access level", "ID уровня доступа"),
    "expired_date": ("the day access ended (X, as MemberLux's profile shows it), in the site's date format",
                     "дата окончания доступа (как в профиле MemberLux), в формате даты сайта"),
    "last_access_date": ("the last day with access (X − 1), in the site's date format",
                         "последний день с доступом (X − 1), в формате даты сайта"),
    "days_since_expiry": ("whole days since access ended", "сколько полных дней прошло с окончания доступа"),
    "step": ("number of this letter in the chain (1–3)", "номер письма в цепочке (1–3)"),
    "is_bundle_course": ("'yes'/'no' (true/false in {% if %}): the level is a step of the learner's program",
                         "«да»/«нет» (истина/ложь в {% if %}): уровень — шаг программы ученика"),
    "bundle_name": ("name of the learner's program containing this level, '' if none",
                    "название программы ученика, в которую входит уровень, или пусто"),
    "renewal_url": ("link to renew (the level's setting, default its WooCommerce product page)",
                    "ссылка на продление (настройка уровня, по умолчанию страница товара WooCommerce)"),
    "unsubscribe_url": ("the learner's personal unsubscribe link", "персональная ссылка отписки"),
    "site_name": ("the site's title (WordPress blogname)", "название сайта (blogname)"),
    "site_url": ("the site's address", "адрес сайта"),
}

DIGEST_VARIABLES: dict[str, tuple[str, str]] = {
    "course_name": ("name of the access level", "название уровня доступа"),
    "level_id": ("term id of the access level", "ID уровня доступа"),
    "learners": ("list of learners; each has the learner variables (e.g. {{ l.user_email }})",
                 "список учеников; у каждого — переменные ученика (например {{ l.user_email }})"),
    "learner_count": ("how many learners the digest lists", "сколько учеников в сводке"),
    "learner_table": ("the ready-made table of learners (added at the end when the body uses neither it "
                      "nor learners)", "готовая таблица учеников (добавляется в конец, если тело письма не "
                      "использует ни её, ни learners)"),
    "digest_date": ("the day of the digest, in the site's date format", "дата сводки в формате даты сайта"),
    "site_name": ("the site's title", "название сайта"),
    "site_url": ("the site's address", "адрес сайта"),
    # The legacy UI offered learner tokens for the admin letter too; in a digest they list every learner.
    **{name: (f"all learners' {name.replace('_', ' ')}, comma-separated",
              f"{name} всех учеников через запятую")
       for name in ("user_email", "user_login", "first_name", "last_name", "expired_date")},
    "is_bundle_course": ("'yes' when the level is a step of some learner's program",
                         "«да», если уровень — шаг программы хотя бы одного ученика"),
    "bundle_name": ("program names of the learners, comma-separated", "названия программ учеников через запятую"),
}

# The renewal link is rendered first, so it cannot refer to itself or to the unsubscribe link.
RENEWAL_URL_VARIABLES: dict[str, tuple[str, str]] = {
    **{k: v for k, v in LEARNER_VARIABLES.items() if k not in ("renewal_url", "unsubscribe_url")},
    "product_id": ("id of the level's WooCommerce key product (0 if none)", "ID товара WooCommerce уровня (0, если нет)"),
}

LEGACY_TOKENS = ("user_email", "user_login", "course_name", "expired_date", "is_bundle_course", "bundle_name")
# The six tokens the old settings screen advertised, and by extension every variable of ours in the
# same bracket style ("[first_name]"), since admins who know one form will write the other.
_BRACKETED = tuple(dict.fromkeys((*LEGACY_TOKENS, *LEARNER_VARIABLES, *DIGEST_VARIABLES, "product_id")))
_LEGACY = re.compile(r"\[(" + "|".join(_BRACKETED) + r")\]")


def translate_legacy(source: str) -> str:
    """``[user_email]`` → ``{{ user_email }}`` for our variable names; other bracketed text stays."""
    return _LEGACY.sub(r"{{ \1 }}", source or "")


class YesNo:
    """A truth value that prints as a word: ``{{ is_bundle_course }}`` → «да», ``{% if … %}`` works."""

    def __init__(self, value: bool, language: str) -> None:
        self.value = value
        self.language = language

    def __bool__(self) -> bool:
        return self.value

    def __str__(self) -> str:
        if self.value:
            return pgettext("letter", "yes", self.language)
        return pgettext("letter", "no", self.language)

    __html__ = __str__


def _line_of(source: str, name: str) -> int | None:
    pattern = re.compile(r"\b" + re.escape(name) + r"\b")
    for number, line in enumerate(source.splitlines(), start=1):
        if pattern.search(line):
            return number
    return None


def check(source: str, allowed: Mapping[str, Any]) -> None:
    """Refuse a template with a syntax error or an unknown variable; the error names the line."""
    text = translate_legacy(source)
    try:
        parsed = _html_env.parse(text)
    except TemplateSyntaxError as exc:
        raise syntax_error(exc) from None
    unknown = sorted(meta.find_undeclared_variables(parsed) - set(allowed))
    if unknown:
        said = Message("templates.unknown_variable", {"name": unknown[0], "known": ", ".join(sorted(allowed))})
        raise TemplateError(said.english(), _line_of(text, unknown[0]), said=said)


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


def _subject(source: str, variables: Mapping[str, Any]) -> str:
    # Headers are one line; a template's newlines would be an injection or a broken header.
    return " ".join(render_text(translate_legacy(source), dict(variables)).split())


def render_subject(source: str, variables: Mapping[str, Any]) -> str:
    """A letter's subject alone (the approval list shows it), as the letter would carry it."""
    return _subject(source, variables)


def render_learner_letter(subject: str, body: str, variables: Mapping[str, Any], *, footer_html: str,
                          footer_text: str) -> Rendered:
    html = render_html(translate_legacy(body), dict(variables))
    text = html_to_text(html)
    return Rendered(_subject(subject, variables), f"{html}\n{footer_html}", f"{text}\n\n-- \n{footer_text}")


def learner_table(learners: list[Mapping[str, Any]], language: str) -> Markup:
    heads = ("ID", "E-mail", pgettext("letter", "First name", language), pgettext("letter", "Last name", language),
             pgettext("letter", "Access ended", language), pgettext("letter", "Days ago", language))
    cells = ("user_id", "user_email", "first_name", "last_name", "expired_date", "days_since_expiry")
    rows = "".join("<tr>" + "".join(f"<td>{escape(str(learner.get(c, '')))}</td>" for c in cells) + "</tr>"
                   for learner in learners)
    head = "".join(f"<th align=\"left\">{escape(h)}</th>" for h in heads)
    return Markup(f'<table border="1" cellpadding="4" cellspacing="0"><tr>{head}</tr>{rows}</table>')  # noqa: S704 - cells escaped


def render_digest(subject: str, body: str, variables: Mapping[str, Any]) -> Rendered:
    source = translate_legacy(body)
    html = render_html(source, dict(variables))
    used = meta.find_undeclared_variables(_html_env.parse(source))
    if not used & {"learners", "learner_table"}:
        html = f"{html}\n{variables['learner_table']}"
    return Rendered(_subject(subject, variables), html, html_to_text(html))


__all__ = [
    "LEARNER_VARIABLES",
    "DIGEST_VARIABLES",
    "LEGACY_TOKENS",
    "RENEWAL_URL_VARIABLES",
    "TemplateError",
    "Rendered",
    "YesNo",
    "translate_legacy",
    "check",
    "render_learner_letter",
    "render_digest",
    "render_subject",
    "learner_table",
    "render_html",
]
