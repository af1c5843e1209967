"""The values a reminder letter or digest is rendered with, gathered read-only from WordPress.

One :class:`LetterContext` per run caches what every letter shares (site name, level names,
programs, products), so a run reads each of them once.

Meanings (docs/reminders.md repeats them):

* ``expired_date`` is X, the first day without access — what MemberLux's profile shows as the end;
  ``last_access_date`` is X − 1. Both written the way the letters' language writes a day (Babel's
  CLDR data): «26 ноября 2026», "November 26, 2026"; X itself is a UTC calendar day.
* ``is_bundle_course`` / ``bundle_name``: the learner's program, from the legacy bundle plugin's data
  (usermeta ``mlp_program_id`` → ``ml_program`` post, its ``mlp_steps``), read-only: the level counts
  as a bundle course when it is one of that program's steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from markupsafe import escape

from sidecar.bootstrap import Runtime
from sidecar.mail.templates import TemplateError, render_text
from sidecar.memberlux.products import ProductCatalog
from sidecar.memberlux.reader import WpUser
from sidecar.memberlux.schema import FeatureUnavailable
from sidecar.memberlux.wpdata import php_unserialize
from sidecar.reminders.letters import YesNo, learner_table, translate_legacy
from sidecar.reminders.unsubscribe import Links
from sidecar.web.i18n import format_date, pgettext

_PROGRAM_POST_TYPE = "ml_program"
# A day in a letter as its language writes it (month in the genitive in Russian, no "г."): [expired_date].
LETTER_DATE = {"ru": "d MMMM y", "en": "MMMM d, y"}


@dataclass(frozen=True)
class Site:
    name: str
    url: str


def _program_steps(raw: str) -> list[int]:
    value = php_unserialize(raw, default=None) if raw else None
    if not isinstance(value, list):
        return []
    steps: list[int] = []
    for step in value:
        if isinstance(step, dict):
            try:
                steps.append(int(step.get("term_id")))
            except (TypeError, ValueError):
                continue
    return steps


class LetterContext:
    def __init__(self, runtime: Runtime, links: Links | None) -> None:
        self.runtime = runtime
        self.links = links
        self.settings = runtime.settings.reminders
        self.language = self.settings.language
        reader = runtime.reader
        options = reader.options(["blogname", "home", "siteurl"])
        self.site = Site(name=options.get("blogname", ""),
                         url=(options.get("home") or options.get("siteurl") or "").rstrip("/"))
        self.level_names = {level.term_id: level.name for level in reader.levels()}
        self._catalog = ProductCatalog(runtime.wp_engine, runtime.site)
        self._programs: dict[int, tuple[str, list[int]] | None] = {}

    # --- pieces -----------------------------------------------------------------------------------

    def day(self, value: date) -> str:
        return format_date(value, LETTER_DATE[self.language], self.language)

    def program_of(self, user_id: int, term_id: int) -> str | None:
        """The name of the learner's (legacy) program when it contains ``term_id``, else None."""
        reader = self.runtime.reader
        try:
            raw = reader.user_meta(user_id, ["mlp_program_id"]).get("mlp_program_id", "")
            program_id = int(raw.strip()) if raw.strip().isdecimal() else 0
            if not program_id:
                return None
            if program_id not in self._programs:
                post = reader.post(program_id)
                if post is None or post.type != _PROGRAM_POST_TYPE:
                    self._programs[program_id] = None
                else:
                    steps = _program_steps(reader.post_meta(program_id).get("mlp_steps", ""))
                    self._programs[program_id] = (post.title, steps)
        except FeatureUnavailable:
            return None
        program = self._programs.get(program_id)
        return program[0] if program and term_id in program[1] else None

    def product_id(self, term_id: int) -> int:
        try:
            products = [p for p in self._catalog.for_level(term_id) if p.status != "trash"]
        except FeatureUnavailable:
            return 0
        products.sort(key=lambda p: (p.status != "publish", p.product_id))
        return products[0].product_id if products else 0

    def renewal_url(self, template: str, variables: Mapping[str, Any]) -> str:
        source = template or self.settings.renewal_url
        product_id = self.product_id(int(variables["level_id"]))
        if not source:
            if product_id:
                return f"{self.site.url}/?post_type=product&p={product_id}"
            return self.site.url or ""
        try:
            return render_text(translate_legacy(source), {**variables, "product_id": product_id}).strip()
        except TemplateError:
            # Checked when saved; a config-file template is checked by `mlsidecar config check`.
            return self.site.url or ""

    # --- variables --------------------------------------------------------------------------------

    def learner(self, user: WpUser, term_id: int, expired_on: date, today: date, *, step: int,
                renewal_template: str = "") -> dict[str, Any]:
        program = self.program_of(user.id, term_id)
        variables: dict[str, Any] = {
            "user_id": user.id,
            "user_email": user.email,
            "user_login": user.login,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "display_name": user.display_name,
            "course_name": self.level_names.get(term_id, f"#{term_id}"),
            "level_id": term_id,
            "expired_date": self.day(expired_on),
            "last_access_date": self.day(date.fromordinal(expired_on.toordinal() - 1)),
            "days_since_expiry": (today - expired_on).days,
            "step": step,
            "is_bundle_course": YesNo(program is not None, self.language),
            "bundle_name": program or "",
            "site_name": self.site.name,
            "site_url": self.site.url,
        }
        variables["renewal_url"] = self.renewal_url(renewal_template, variables)
        variables["unsubscribe_url"] = self.links.url(user.id) if self.links else ""
        return variables

    def digest(self, term_id: int, day: date, learners: list[dict[str, Any]]) -> dict[str, Any]:
        def joined(name: str) -> str:
            return ", ".join(str(learner[name]) for learner in learners if str(learner.get(name, "")))

        programs = sorted({learner["bundle_name"] for learner in learners if learner.get("bundle_name")})
        return {
            "course_name": self.level_names.get(term_id, f"#{term_id}"),
            "level_id": term_id,
            "learners": learners,
            "learner_count": len(learners),
            "learner_table": learner_table(learners, self.language),
            "digest_date": self.day(day),
            "site_name": self.site.name,
            "site_url": self.site.url,
            **{name: joined(name) for name in ("user_email", "user_login", "first_name", "last_name", "expired_date")},
            "is_bundle_course": YesNo(bool(programs), self.language),
            "bundle_name": ", ".join(programs),
        }

    def footer(self, user_id: int) -> tuple[str, str]:
        """The unsubscribe footer every learner letter carries (HTML, text)."""
        url = self.links.url(user_id) if self.links else ""
        words = pgettext("letter", "You received this because your access to a course ended. Stop these reminders",
                         self.language)
        return (f'<p style="color:#888;font-size:12px">{escape(words)}: <a href="{escape(url)}">{escape(url)}</a></p>',
                f"{words}: {url}")
