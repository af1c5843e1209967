"""The program form: fields to a :class:`ProgramDefinition`, and back for editing.

Steps are rows of the form (``steps-N-term_id``, ``-duration``, ``-units``). Rows are added and
removed without JavaScript: "add a step" and each row's "remove" are submit buttons that re-render
the form with one row more or less; nothing is saved until "save". Empty rows are dropped on save,
so the remaining rows are numbered like the steps the rules speak of (``steps.2.term_id``).

Only what the rules cannot see is checked here (numbers that are not numbers, an e-mail address, a
URL's shape); everything about the program itself is :func:`sidecar.domain.programs.check_program`'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from sidecar.domain.programs import MAX_STEPS, UNITS, Counting, Step
from sidecar.monitor.settings import EMAIL_PATTERN
from sidecar.programs.catalog import ProgramDefinition
from sidecar.web.i18n import gettext

START_ROWS = 3
_URL = re.compile(r"^https?://[^/\s?#]+\S*$")
LIMITS = {"name": 200, "notify_email": 200, "notify_step_subject": 300, "notify_complete_subject": 300,
          "webhook_url": 500, "notify_step_body": 20000, "notify_complete_body": 20000}
TEXT_FIELDS = ("name", "notify_email", "notify_step_subject", "notify_step_body", "notify_complete_subject",
               "notify_complete_body", "webhook_url")


@dataclass(frozen=True)
class StepRow:
    term_id: str = ""
    duration: str = ""
    units: str = "months"

    @property
    def empty(self) -> bool:
        return not self.term_id.strip() and not self.duration.strip()


@dataclass(frozen=True)
class ProgramForm:
    name: str = ""
    counting: str = Counting.MANUAL.value
    grant_first_step: bool = False
    enrol_on_first_level: bool = False
    rows: tuple[StepRow, ...] = field(default_factory=lambda: tuple(StepRow() for _ in range(START_ROWS)))
    notify_email: str = ""
    notify_step_subject: str = ""
    notify_step_body: str = ""
    notify_complete_subject: str = ""
    notify_complete_body: str = ""
    webhook_url: str = ""
    legacy_post_id: int | None = None   # kept when an imported program is edited

    @classmethod
    def from_definition(cls, d: ProgramDefinition) -> ProgramForm:
        rows = tuple(StepRow(str(s.term_id), str(s.duration), s.units) for s in d.steps) + (StepRow(),)
        return cls(name=d.name, counting=d.counting.value, grant_first_step=d.grant_first_step,
                   enrol_on_first_level=d.enrol_on_first_level, rows=rows, notify_email=d.notify_email,
                   notify_step_subject=d.notify_step_subject, notify_step_body=d.notify_step_body,
                   notify_complete_subject=d.notify_complete_subject, notify_complete_body=d.notify_complete_body,
                   webhook_url=d.webhook_url, legacy_post_id=d.legacy_post_id)

    @classmethod
    def from_request(cls, form: Mapping[str, str], legacy_post_id: int | None = None) -> ProgramForm:
        raw_count = (form.get("rows") or "").strip()
        count = min(int(raw_count), MAX_STEPS + 1) if raw_count.isdecimal() and len(raw_count) <= 9 else START_ROWS
        rows = tuple(StepRow((form.get(f"steps-{n}-term_id") or "").strip(),
                             (form.get(f"steps-{n}-duration") or "").strip(),
                             (form.get(f"steps-{n}-units") or "months").strip())
                     for n in range(1, count + 1))
        texts = {name: (form.get(name) or "").strip() if "body" not in name else (form.get(name) or "")
                 for name in TEXT_FIELDS}
        return cls(counting=(form.get("counting") or "").strip(), grant_first_step=bool(form.get("grant_first_step")),
                   enrol_on_first_level=bool(form.get("enrol_on_first_level")), rows=rows,
                   legacy_post_id=legacy_post_id, **texts)

    def add_row(self) -> ProgramForm:
        return self if len(self.rows) > MAX_STEPS else replace(self, rows=self.rows + (StepRow(),))

    def remove_row(self, number: int) -> ProgramForm:
        rows = tuple(row for n, row in enumerate(self.rows, start=1) if n != number)
        return replace(self, rows=rows or (StepRow(),))

    def compacted(self) -> ProgramForm:
        """Empty rows dropped and one empty row at the end to add a step with."""
        return replace(self, rows=tuple(row for row in self.rows if not row.empty) + (StepRow(),))

    def definition(self) -> tuple[ProgramDefinition | None, dict[str, str]]:
        """The definition, or ``None`` with the form's own errors by field (rows numbered as compacted)."""
        errors: dict[str, str] = {}
        for name, limit in LIMITS.items():
            if len(getattr(self, name)) > limit:
                errors[name] = gettext("At most {max} characters.", max=limit)
        if self.counting not in {c.value for c in Counting}:
            errors["counting"] = gettext("Choose which certificates count.")
        steps: list[Step] = []
        for n, row in enumerate((row for row in self.rows if not row.empty), start=1):
            term_id = duration = 0
            if not row.term_id:
                errors[f"steps.{n}.term_id"] = gettext("Choose a level (or clear the row).")
            elif not row.term_id.isdecimal() or len(row.term_id) > 18:
                errors[f"steps.{n}.term_id"] = gettext("Not a level: «{value}».", value=row.term_id[:40])
            else:
                term_id = int(row.term_id)
            if not row.duration.isdecimal() or len(row.duration) > 5:
                errors[f"steps.{n}.duration"] = gettext("Enter a positive whole number (got «{value}»).", value=row.duration[:40])
            else:
                duration = int(row.duration)
            if row.units not in UNITS:
                errors[f"steps.{n}.units"] = gettext("Choose days or months.")
            steps.append(Step(term_id, duration, row.units))
        if self.notify_email and not EMAIL_PATTERN.match(self.notify_email):
            errors["notify_email"] = gettext("Not an e-mail address: «{value}».", value=self.notify_email[:100])
        if self.webhook_url and not _URL.match(self.webhook_url):
            errors["webhook_url"] = gettext("Enter an http:// or https:// address.")
        if errors:
            return None, errors
        return ProgramDefinition(
            name=self.name, steps=tuple(steps), counting=Counting(self.counting),
            enrol_on_first_level=self.enrol_on_first_level, grant_first_step=self.grant_first_step,
            notify_email=self.notify_email, notify_step_subject=self.notify_step_subject,
            notify_step_body=self.notify_step_body, notify_complete_subject=self.notify_complete_subject,
            notify_complete_body=self.notify_complete_body, webhook_url=self.webhook_url,
            legacy_post_id=self.legacy_post_id), {}
