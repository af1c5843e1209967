"""Import of the legacy ``ml-bundle-courses`` data, read-only (legacy-plugins.md §2.1, §2.3–2.5).

Programs come from ``ml_program`` posts (``mlp_steps`` PHP-serialized, ``mlp_notify_*``,
``mlp_webhook_url``); progress from usermeta ``mlp_program_id`` / ``mlp_current_step`` /
``mlp_last_certificate_hash`` (md5 of ``"{user_id}:{certificate_id}"``), cross-checked with the keys
the plugin granted (``keys_meta.source`` = ``program_flow``) and the certificates — the index alone is
not trusted: the plugin wrote it but never read it (§2.4).

:func:`plan_import` reads everything and returns a plan (what would be created, and every problem);
nothing is written. :func:`apply_import` writes a plan with no blocking problem in **one**
transaction, so a malformed value never leaves half an import behind. Importing twice is harmless:
programs already imported (same post id) and learners already enrolled are skipped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from sidecar.bootstrap import Runtime
from sidecar.domain.messages import Message
from sidecar.domain.programs import Counting, EnrolmentStatus, Step, check_program
from sidecar.memberlux.wpdata import WpDataError, php_unserialize
from sidecar.programs.catalog import ProgramDefinition, level_mode
from sidecar.store import audit
from sidecar.store.db import unit_of_work
from sidecar.store.monitor_models import CertificateClassRow
from sidecar.store.program_models import Enrolment, EnrolmentEvent, Program, ProgramStep
from sidecar.programs.progression import queue_recent_certificates
from sidecar.webhooks.endpoints import program_endpoints

PROGRAM_POST_TYPE = "ml_program"
SOURCE = "legacy"


class LegacyDataError(ValueError):
    """A legacy value that cannot be read; the import refuses to start."""


class UnreadableValue(LegacyDataError):
    """One program's legacy value that cannot be read, said as a message for the plan's problems."""

    def __init__(self, said: Message) -> None:
        super().__init__(said.english())
        self.said = said


@dataclass
class ProgramPlan:
    post_id: int
    title: str
    post_status: str
    definition: ProgramDefinition | None
    problems: list[Message] = field(default_factory=list)     # blocking
    notes: list[Message] = field(default_factory=list)        # informative
    already_imported_as: int | None = None


@dataclass
class EnrolmentPlan:
    user_id: int
    post_id: int
    current_step: int               # 0-based
    completed: bool
    evidence: list[Message] = field(default_factory=list)
    problems: list[Message] = field(default_factory=list)
    already_enrolled: bool = False


@dataclass
class ImportPlan:
    programs: list[ProgramPlan] = field(default_factory=list)
    enrolments: list[EnrolmentPlan] = field(default_factory=list)

    @property
    def new_programs(self) -> int:
        """Programs an apply would create (the others were imported before and are skipped)."""
        return sum(p.already_imported_as is None for p in self.programs)

    @property
    def new_enrolments(self) -> int:
        """Enrolments an apply would create (learners already enrolled are skipped)."""
        return sum(not e.already_enrolled for e in self.enrolments)

    @property
    def blocking(self) -> list[str]:
        """Every blocking problem in English, as the CLI and the refusal print them."""
        return ([f"program {p.post_id}: {m}" for p in self.programs for m in p.problems]
                + [f"user {e.user_id}: {m}" for e in self.enrolments for m in e.problems])


def _parse_steps(raw: str, post_id: int) -> list[Step]:
    try:
        value = php_unserialize(raw)
    except WpDataError as exc:
        raise UnreadableValue(Message("programs.legacy.unserialize", {"post": post_id, "detail": str(exc)})) from None
    if not isinstance(value, list) or not value:
        raise UnreadableValue(Message("programs.legacy.not_list", {"post": post_id}))
    steps = []
    for n, item in enumerate(value, start=1):
        if not isinstance(item, dict):
            raise UnreadableValue(Message("programs.legacy.step_not_array", {"step": n, "post": post_id}))
        try:
            term_id = int(item.get("term_id"))
            duration = int(item.get("duration", 1) or 1)
        except (TypeError, ValueError):
            raise UnreadableValue(Message("programs.legacy.step_not_numeric",
                                          {"step": n, "post": post_id, "detail": repr(item)})) from None
        units = str(item.get("units") or "months").strip()
        # The legacy save turned anything but days/months into months; the owner's brief used day/month.
        units = {"day": "days", "days": "days", "month": "months", "months": "months"}.get(units, "months")
        steps.append(Step(term_id, duration, units))
    return steps


def _int(raw: str | None) -> int | None:
    text = (raw or "").strip()
    return int(text) if text.lstrip("-").isdecimal() else None


def plan_import(runtime: Runtime) -> ImportPlan:
    from sidecar.monitor.certificates import CertificateClassifier

    CertificateClassifier(runtime).sync()  # the last-certificate hashes are matched against our copy
    reader = runtime.reader
    posts = reader.schema.table("posts")
    with reader.engine.connect() as conn:
        rows = conn.execute(sa.select(posts.c.ID, posts.c.post_title, posts.c.post_status)
                            .where(posts.c.post_type == PROGRAM_POST_TYPE).order_by(posts.c.ID)).all()
    level_names = {level.term_id: level.name for level in reader.levels()}
    with runtime.sessions() as session:
        imported = {int(p.legacy_post_id): p.id for p in session.scalars(
            sa.select(Program).where(Program.legacy_post_id.is_not(None)))}
    plan = ImportPlan()
    steps_by_post: dict[int, list[Step]] = {}
    for row in rows:
        post_id = int(row.ID)
        meta = reader.post_meta(post_id)
        entry = ProgramPlan(post_id, str(row.post_title or ""), str(row.post_status or ""), None,
                            already_imported_as=imported.get(post_id))
        plan.programs.append(entry)
        try:
            steps = _parse_steps(meta.get("mlp_steps", ""), post_id)
        except UnreadableValue as exc:
            entry.problems.append(exc.said)
            continue
        steps_by_post[post_id] = steps
        entry.notes.append(Message("programs.legacy.first_duration"))
        if entry.post_status != "publish":
            entry.notes.append(Message("programs.legacy.not_published", {"status": entry.post_status}))
        notify = (meta.get("mlp_notify_enabled") or "").strip() == "1"
        definition = ProgramDefinition(
            name=entry.title or f"Program {post_id}", steps=tuple(steps), counting=Counting.MANUAL,
            notify_email=(meta.get("mlp_notify_email") or "").strip() if notify else "",
            notify_step_subject=meta.get("mlp_notify_step_subject") or "",
            notify_step_body=meta.get("mlp_notify_step_body") or "",
            notify_complete_subject=meta.get("mlp_notify_complete_subject") or "",
            notify_complete_body=meta.get("mlp_notify_complete_body") or "",
            webhook_url=(meta.get("mlp_webhook_url") or "").strip(), legacy_post_id=post_id)
        modes = {s.term_id: level_mode(reader.level_meta(s.term_id)) for s in steps if s.term_id in level_names}
        for problem in check_program(definition.name, definition.steps, definition.counting,
                                     level_names=level_names, level_modes=modes):
            (entry.problems if problem.blocking else entry.notes).append(replace(problem.said, field=problem.field))
        entry.definition = definition
    plan.enrolments = _plan_enrolments(runtime, steps_by_post, {p.post_id for p in plan.programs})
    return plan


def _plan_enrolments(runtime: Runtime, steps_by_post: dict[int, list[Step]], program_posts: set[int]) -> list[EnrolmentPlan]:
    reader = runtime.reader
    um = reader.schema.table("usermeta")
    keys = ("mlp_program_id", "mlp_current_step", "mlp_last_certificate_hash")
    with reader.engine.connect() as conn:
        meta: dict[int, dict[str, str]] = {}
        for row in conn.execute(sa.select(um.c.user_id, um.c.meta_key, um.c.meta_value)
                                .where(um.c.meta_key.in_(keys)).order_by(um.c.umeta_id)):
            meta.setdefault(int(row.user_id), {}).setdefault(row.meta_key, str(row.meta_value or ""))
    with runtime.sessions() as session:
        enrolled = {(int(p), int(u)) for p, u in session.execute(
            sa.select(Program.legacy_post_id, Enrolment.user_id).join(Enrolment, Enrolment.program_id == Program.id)
            .where(Program.legacy_post_id.is_not(None)))}
    plans = []
    for user_id, values in sorted(meta.items()):
        post_id = _int(values.get("mlp_program_id"))
        if not post_id:
            continue
        entry = EnrolmentPlan(user_id, post_id, 0, False, already_enrolled=(post_id, user_id) in enrolled)
        plans.append(entry)
        if post_id not in program_posts:
            entry.problems.append(Message("programs.legacy.no_program", {"post": post_id}))
            continue
        steps = steps_by_post.get(post_id)
        if steps is None:
            continue  # the program itself is blocked; reported there
        if reader.user(user_id) is None:
            entry.problems.append(Message("programs.legacy.no_user"))
            continue
        _reconstruct(runtime, entry, steps, values)
    return plans


def _reconstruct(runtime: Runtime, entry: EnrolmentPlan, steps: list[Step], values: dict[str, str]) -> None:
    """The learner's position from three sources; the furthest evidenced step wins, disagreement noted."""
    reader = runtime.reader
    user_id = entry.user_id
    stored = _int(values.get("mlp_current_step"))
    if values.get("mlp_current_step", "").strip() and stored is None:
        entry.problems.append(Message("programs.legacy.step_not_number", {"value": values["mlp_current_step"]}))
        return
    positions: dict[str, int] = {}      # the evidence's message code -> 0-based step
    if stored is not None:
        if not 0 <= stored < len(steps):
            entry.problems.append(Message("programs.legacy.step_outside", {"value": stored, "total": len(steps)}))
            return
        positions["programs.legacy.evidence_index"] = stored
    # Keys the plugin granted carry source program_flow: step k's level granted => position >= k.
    levels = {s.term_id for s in steps}
    flow_levels = {term_id for term_id, source in reader.key_sources(user_id, levels) if source == "program_flow"}
    granted = [k for k, step in enumerate(steps) if k > 0 and step.term_id in flow_levels]
    if granted:
        positions["programs.legacy.evidence_keys"] = max(granted)
    completed = False
    digest = (values.get("mlp_last_certificate_hash") or "").strip().lower()
    if digest:
        # From our classified copy (indexed by level and user); the site's table has only its primary key.
        with runtime.sessions() as session:
            certificates = list(session.scalars(sa.select(CertificateClassRow).where(
                CertificateClassRow.level_id.in_(sorted(levels)), CertificateClassRow.user_id == user_id)))
        def legacy_hash(certificate_id: int) -> str:
            return hashlib.md5(f"{user_id}:{certificate_id}".encode(), usedforsecurity=False).hexdigest()

        match = next((c for c in certificates if legacy_hash(c.certificate_id) == digest), None)
        if match is None:
            entry.evidence.append(Message("programs.legacy.hash_unmatched"))
        else:
            index = next((k for k, s in enumerate(steps) if s.term_id == match.level_id), None)
            if index is not None:
                if index == len(steps) - 1:
                    completed = True
                positions["programs.legacy.evidence_certificate"] = min(index + 1, len(steps) - 1)
    entry.current_step = max(positions.values(), default=0)
    entry.completed = completed and entry.current_step == len(steps) - 1
    entry.evidence += [Message(code, {"step": value + 1}) for code, value in positions.items()]
    if len(set(positions.values())) > 1:
        entry.evidence.append(Message("programs.legacy.disagree"))


def apply_import(runtime: Runtime, plan: ImportPlan, actor: str) -> dict[str, int]:
    """Write the plan in one transaction; refuses a plan with blocking problems."""
    if plan.blocking:
        raise LegacyDataError("the import has blocking problems; nothing was imported:\n" + "\n".join(plan.blocking))
    now = runtime.clock.now()
    today = runtime.clock.today_utc()
    counts = {"programs": 0, "enrolments": 0, "skipped_programs": 0, "skipped_enrolments": 0}
    with unit_of_work(runtime.sessions) as session:
        program_ids: dict[int, int] = {}
        for entry in plan.programs:
            if entry.already_imported_as is not None:
                program_ids[entry.post_id] = entry.already_imported_as
                counts["skipped_programs"] += 1
                continue
            d = entry.definition
            assert d is not None
            program = Program(name=d.name[:200], status="active" if entry.post_status == "publish" else "archived",
                              counting=d.counting.value, enrol_on_first_level=False, grant_first_step=False,
                              notify_email=d.notify_email, notify_step_subject=d.notify_step_subject,
                              notify_step_body=d.notify_step_body, notify_complete_subject=d.notify_complete_subject,
                              notify_complete_body=d.notify_complete_body, webhook_url=d.webhook_url,
                              legacy_post_id=entry.post_id, created_at=now, updated_at=now)
            session.add(program)
            session.flush()
            session.add_all([ProgramStep(program_id=program.id, position=n, term_id=s.term_id, duration=s.duration,
                                         units=s.units) for n, s in enumerate(d.steps)])
            program_ids[entry.post_id] = program.id
            program_endpoints(session, program.id, webhook_url=d.webhook_url, notify_email=d.notify_email, now=now)
            counts["programs"] += 1
        for e in plan.enrolments:
            if e.already_enrolled:
                counts["skipped_enrolments"] += 1
                continue
            status = EnrolmentStatus.COMPLETED if e.completed else EnrolmentStatus.ACTIVE
            enrolment = Enrolment(program_id=program_ids[e.post_id], user_id=e.user_id, current_step=e.current_step,
                                  step_since=today, status=status.value, source=SOURCE, actor=actor[:120],
                                  enrolled_at=now, updated_at=now, completed_at=now if e.completed else None)
            session.add(enrolment)
            session.flush()
            session.add(EnrolmentEvent(enrolment_id=enrolment.id, at=now, kind="imported", step=e.current_step + 1,
                                       detail={"evidence": [str(m) for m in e.evidence], "completed": e.completed,
                                               "evidence_codes": [m.as_dict() for m in e.evidence]}))
            if not e.completed:
                # Certificates of the switch-over day (old plugin off, import not yet done) still count.
                steps = [entry.definition.steps for entry in plan.programs if entry.post_id == e.post_id][0]
                queue_recent_certificates(session, e.user_id, steps[e.current_step].term_id, today, now)
            counts["enrolments"] += 1
        audit.record(session, subject_type="program", subject_id="legacy", action="program.legacy_imported", at=now,
                     actor=actor, **counts)
    return counts


def _english(messages: list[Message]) -> list[str]:
    return [m.english() for m in messages]


def describe(plan: ImportPlan) -> dict[str, Any]:
    """A plain structure of the plan for the CLI's JSON and the UI."""
    return {
        "programs": [{"post_id": p.post_id, "title": p.title, "post_status": p.post_status,
                      "already_imported_as": p.already_imported_as, "problems": _english(p.problems),
                      "notes": _english(p.notes),
                      "steps": [s.__dict__ for s in p.definition.steps] if p.definition else None}
                     for p in plan.programs],
        "enrolments": [{"user_id": e.user_id, "post_id": e.post_id, "step": e.current_step + 1,
                        "completed": e.completed, "already_enrolled": e.already_enrolled,
                        "evidence": _english(e.evidence), "problems": _english(e.problems)} for e in plan.enrolments],
        "new_programs": plan.new_programs,
        "new_enrolments": plan.new_enrolments,
        "blocking": plan.blocking,
    }


__all__ = ["ImportPlan", "LegacyDataError", "plan_import", "apply_import", "describe"]
