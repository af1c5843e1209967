"""Per-level monitor settings: imported read-only from the legacy plugin's term meta, overridable here.

The legacy ``ml-learning-monitor`` stored its settings as termmeta ``mlm_*`` of each level
(legacy-plugins.md §3.1). We never write there: values changed in our UI are kept as overrides in
our store (``mls_setting_overrides``, scope ``monitor.level.<term_id>``) and win over the imported
ones; every change is audited. A key the legacy plugin never saved is absent, so ``0`` days can mean
"never set": a letter counts as configured only when it has a subject or a body.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from sidecar.bootstrap import Runtime
from sidecar.domain.messages import Message
from sidecar.store import audit
from sidecar.store.db import unit_of_work
from sidecar.store.models import SettingOverride

if TYPE_CHECKING:
    from sidecar.mail.templates import TemplateError

LETTERS = 3
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class Letter:
    days: int | None = None     # days after access ended; None = never set
    subject: str = ""
    body: str = ""

    @property
    def configured(self) -> bool:
        # An empty letter is off even when its days value is 0 (legacy-plugins.md §4.3).
        return bool(self.subject.strip() or self.body.strip()) and self.days is not None


@dataclass(frozen=True)
class LevelSettings:
    term_id: int
    enabled: bool = False
    letters: tuple[Letter, ...] = field(default_factory=lambda: tuple(Letter() for _ in range(LETTERS)))
    admin_days_after_last: int | None = None
    admin_email: str = ""
    admin_subject: str = ""
    admin_body: str = ""
    renewal_url: str = ""              # Jinja2 template of the renewal link; "" = reminders.renewal_url
    overridden: tuple[str, ...] = ()   # names whose value comes from our store, not term meta

    def as_values(self) -> dict[str, Any]:
        values = asdict(self)
        values.pop("term_id"), values.pop("overridden")
        values["letters"] = [asdict(letter) for letter in self.letters]
        return values


class SettingsError(ValueError):
    """Settings refused; ``errors`` maps each field to what is wrong with it (English: ``str()``)."""

    def __init__(self, errors: dict[str, Message]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def _int_or_none(raw: Any) -> int | None:
    if raw is None or str(raw).strip() == "":
        return None
    try:
        return int(str(raw).strip())
    except ValueError:
        return None


def _imported_days(meta: dict[str, str], n: int) -> int | None:
    days = _int_or_none(meta.get(f"mlm_email_{n}_days"))
    # The legacy form saved an empty field as 0. Only the first letter can sensibly go out on the day
    # access ends, so 0 on letter 2 or 3 is that empty field: not set.
    return None if n > 1 and days == 0 else days


def from_term_meta(term_id: int, meta: dict[str, str]) -> LevelSettings:
    letters = tuple(
        Letter(days=_imported_days(meta, n), subject=(meta.get(f"mlm_email_{n}_subject") or ""),
               body=(meta.get(f"mlm_email_{n}_body") or ""))
        for n in range(1, LETTERS + 1)
    )
    return LevelSettings(
        term_id=term_id, enabled=str(meta.get("mlm_enabled", "")).strip() == "1", letters=letters,
        admin_days_after_last=_int_or_none(meta.get("mlm_admin_days_after_last")),
        admin_email=(meta.get("mlm_admin_email") or "").strip(),
        admin_subject=meta.get("mlm_admin_subject") or "", admin_body=meta.get("mlm_admin_body") or "",
    )


def validate(settings: LevelSettings) -> None:
    """Refuse settings the reminders could not follow, naming each field.

    A letter is either off (no subject, no body, no days — or the legacy form's ``0`` days) or whole
    (days, subject and body). A half-filled letter would be saved and then silently never sent, so it
    is refused on the field that is missing. Every letter that has days must come later than the
    previous one that has days, whether or not it is whole yet.
    """
    errors: dict[str, Message] = {}
    previous: tuple[int, int] | None = None   # (letter, days) of the last letter with days
    for n, letter in enumerate(settings.letters, start=1):
        has_subject, has_body = bool(letter.subject.strip()), bool(letter.body.strip())
        if letter.days is not None and letter.days < 0:
            errors[f"letters.{n}.days"] = Message("settings.negative_days")
        if has_subject or has_body:
            if letter.days is None:
                errors[f"letters.{n}.days"] = Message("settings.text_without_days")
            if not has_subject:
                errors[f"letters.{n}.subject"] = Message("settings.no_subject")
            if not has_body:
                errors[f"letters.{n}.body"] = Message("settings.no_body")
        elif letter.days is not None and letter.days > 0:
            errors[f"letters.{n}.subject"] = Message("settings.days_without_subject")
            errors[f"letters.{n}.body"] = Message("settings.days_without_body")
        if letter.days is None or letter.days < 0 or not (has_subject or has_body or letter.days > 0):
            continue  # no time to compare: unset, negative (refused above) or the legacy empty 0
        if previous is not None and letter.days <= previous[1]:
            errors.setdefault(f"letters.{n}.days", Message("settings.not_later", {"n": previous[0], "days": previous[1]}))
        previous = (n, letter.days)
    if settings.admin_days_after_last is not None and settings.admin_days_after_last < 0:
        errors["admin_days_after_last"] = Message("settings.negative")
    admin_on = bool(settings.admin_subject.strip() or settings.admin_body.strip())
    if admin_on and settings.admin_days_after_last is None:
        errors["admin_days_after_last"] = Message("settings.admin_without_days")
    if admin_on and not EMAIL_PATTERN.match(settings.admin_email):
        errors["admin_email"] = Message("settings.admin_email_required")
    if settings.admin_email and not EMAIL_PATTERN.match(settings.admin_email):
        errors["admin_email"] = Message("settings.bad_email")
    errors.update(template_errors(settings))
    if errors:
        raise SettingsError(errors)


def template_errors(settings: LevelSettings) -> dict[str, Message]:
    """Each template that cannot render, with its line: refused when saved, never found at send time."""
    from sidecar.reminders.letters import DIGEST_VARIABLES, LEARNER_VARIABLES, RENEWAL_URL_VARIABLES, check
    from sidecar.mail.templates import TemplateError

    sources: list[tuple[str, str, dict]] = []
    for n, letter in enumerate(settings.letters, start=1):
        sources += [(f"letters.{n}.subject", letter.subject, LEARNER_VARIABLES),
                    (f"letters.{n}.body", letter.body, LEARNER_VARIABLES)]
    sources += [("admin_subject", settings.admin_subject, DIGEST_VARIABLES),
                ("admin_body", settings.admin_body, DIGEST_VARIABLES),
                ("renewal_url", settings.renewal_url, RENEWAL_URL_VARIABLES)]
    errors: dict[str, Message] = {}
    for name, source, allowed in sources:
        try:
            check(source, allowed)
        except TemplateError as exc:
            errors[name] = template_error(exc)
    return errors


def template_error(exc: TemplateError) -> Message:
    """A template's error as the settings word it: "template error at line 3: unexpected '}'"."""
    if exc.line:
        return Message("settings.template_at_line", {"line": exc.line, "reason": exc.said})
    return Message("settings.template", {"reason": exc.said})


def _scope(term_id: int) -> str:
    return f"monitor.level.{term_id}"


def _merged(base: LevelSettings, overrides: dict[str, Any]) -> LevelSettings:
    """The imported settings with our store's overrides applied (they win)."""
    if not overrides:
        return base
    values = base.as_values()
    values.update({k: v for k, v in overrides.items() if k in values})
    letters = tuple(Letter(**letter) for letter in values.pop("letters"))
    return LevelSettings(term_id=base.term_id, letters=letters, overridden=tuple(sorted(overrides)), **values)


def reminder_admin_addresses(reader: Any, sessions: Any) -> list[str]:
    """The administrator addresses of the reminders' digests: every valid address that a level with
    monitoring on names (its effective settings), distinct, sorted. Takes the WordPress reader and our
    store's sessions rather than a runtime, so that ``doctor`` can ask too."""
    with sessions() as session:
        overrides: dict[str, dict[str, Any]] = {}
        for row in session.scalars(sa.select(SettingOverride).where(SettingOverride.scope.like("monitor.level.%"))):
            overrides.setdefault(row.scope, {})[row.name] = row.value
    found = set()
    for level in reader.levels():
        settings = _merged(from_term_meta(level.term_id, reader.level_meta(level.term_id)),
                           overrides.get(_scope(level.term_id), {}))
        if settings.enabled and EMAIL_PATTERN.match(settings.admin_email):
            found.add(settings.admin_email)
    return sorted(found)


class MonitorSettings:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def imported(self, term_id: int) -> LevelSettings:
        return from_term_meta(term_id, self.runtime.reader.level_meta(term_id))

    def effective(self, term_id: int) -> LevelSettings:
        base = self.imported(term_id)
        with self.runtime.sessions() as session:
            overrides = {o.name: o.value for o in session.scalars(
                sa.select(SettingOverride).where(SettingOverride.scope == _scope(term_id)))}
        return _merged(base, overrides)

    def all_levels(self) -> dict[int, LevelSettings]:
        return {level.term_id: self.effective(level.term_id) for level in self.runtime.reader.levels()}

    def save(self, new: LevelSettings, actor: str) -> LevelSettings:
        """Store what differs from the imported values as overrides; audit the change."""
        validate(new)
        imported, current = self.imported(new.term_id).as_values(), self.effective(new.term_id).as_values()
        wanted = new.as_values()
        now = self.runtime.clock.now()
        changed = {k: {"from": current[k], "to": v} for k, v in wanted.items() if current[k] != v}
        with unit_of_work(self.runtime.sessions) as session:
            for name, value in wanted.items():
                row = session.get(SettingOverride, (_scope(new.term_id), name))
                if value == imported[name]:
                    if row is not None:
                        session.delete(row)
                elif row is None:
                    session.add(SettingOverride(scope=_scope(new.term_id), name=name, value=value,
                                                updated_at=now, updated_by=actor))
                else:
                    row.value, row.updated_at, row.updated_by = value, now, actor
            if changed:
                audit.record(session, subject_type="monitor_level", subject_id=str(new.term_id),
                             action="settings.changed", at=now, actor=actor, changes=changed)
        return self.effective(new.term_id)

    def reset(self, term_id: int, actor: str) -> LevelSettings:
        """Drop every override: the level follows the imported term meta again."""
        now = self.runtime.clock.now()
        with unit_of_work(self.runtime.sessions) as session:
            removed = session.execute(sa.delete(SettingOverride).where(SettingOverride.scope == _scope(term_id))).rowcount
            if removed:
                audit.record(session, subject_type="monitor_level", subject_id=str(term_id), action="settings.reset",
                             at=now, actor=actor, overrides_removed=removed)
        return self.effective(term_id)


def with_enabled(settings: LevelSettings, enabled: bool) -> LevelSettings:
    return replace(settings, enabled=enabled)
