"""Program pages: the list, the program form, a program's learners, a learner's timeline, the
legacy import.

Thin on purpose: definitions go through :class:`ProgramCatalog` (which checks them against the site
and audits), enrolments through :class:`Progression`, reading through :mod:`sidecar.programs.status`,
the import through :mod:`sidecar.programs.legacy` (a dry run on GET, everything or nothing on POST).
The rules' and the import's messages are shown in the UI's language by :mod:`sidecar.web.messages`,
stored values by :mod:`sidecar.programs.labels`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from sidecar.bootstrap import Runtime
from sidecar.bridge.service import IntakeRejected
from sidecar.domain.programs import MAX_STEPS, UNITS, ProgramProblem
from sidecar.monitor.display import Display as MonitorDisplay
from sidecar.monitor.display import level_tree
from sidecar.domain.messages import Message
from sidecar.programs import labels, legacy, status
from sidecar.programs.catalog import ProgramCatalog, ProgramRejected, ProgramView, level_mode
from sidecar.programs.forms import ProgramForm
from sidecar.programs.notices import PLACEHOLDERS
from sidecar.programs.progression import EnrolmentRefused, Progression
from sidecar.status import site_timezone
from sidecar.web import app_singleton, current_runtime
from sidecar.web.auth import login_required, safe_next
from sidecar.web.i18n import gettext, lazy_gettext, pgettext
from sidecar.web.messages import say
from sidecar.web.pages import actor
from sidecar.webhooks.ssrf import DestinationRefused, check_destination

log = logging.getLogger(__name__)

blueprint = Blueprint("programs", __name__)

PER_PAGE = 50
FOUND_USERS = 20      # learners listed for a name typed into the enrol form
IMPORT_PER_PAGE = 100
STALLED_CHOICES = (7, 14, 30, 60, 90, 180)
MAX_STALLED_DAYS = 3650
LEARNER_STATUSES = ("active", "completed", "withdrawn")


_runtime = current_runtime


def _progression() -> Progression:
    # One per app: its bridge service keeps the level and product caches the intake also keeps.
    return app_singleton("mlsidecar.progression", Progression)


_actor = actor  # the administrator's login for audit events

# How a level issues certificates, next to its name in the form's level lists.
_MODES = {
    "auto": lazy_gettext("certificates: automatic"),
    "employee": lazy_gettext("certificates: by hand"),
}


class Display(MonitorDisplay):
    """The monitor's time and level formatting plus the programs' own labels."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._level_label = labels.level_label(self.names)

    def level_label(self, term_id: int) -> str:
        return self._level_label(term_id)

    @staticmethod
    def term(duration: int, units: str) -> str:
        return labels.term(duration, units)

    def problem(self, problem: ProgramProblem) -> str:
        return say(problem.said, self)

    def field_problem(self, problem: ProgramProblem) -> str:
        """A warning with the field it concerns, as the form names it."""
        return f"{labels.field_label(problem.field)}: {self.problem(problem)}"

    def legacy(self, message: Message) -> str:
        return say(message, self, labels.field_label)

    def detail(self, event: status.TimelineEvent) -> str:
        return labels.event_detail(event.kind, event.detail, self)

    @staticmethod
    def label(kind: str, value: str | None) -> str:
        return labels.label(kind, value)

    def waiting(self, why: Message | str) -> str:
        return say(why, self) or "—"


def _display(runtime: Runtime) -> Display:
    zone, _source = site_timezone(runtime)
    return Display(zone, runtime.reader.levels(), runtime.clock.today_utc())


def _program_or_404(runtime: Runtime, program_id: int) -> ProgramView:
    try:
        return ProgramCatalog(runtime).get(program_id)
    except LookupError:
        abort(404, description=gettext("There is no program #{id}.", id=program_id))


# --- the list ------------------------------------------------------------------------------------------

@blueprint.get("/programs")
@login_required
def program_list():
    runtime = _runtime()
    display = _display(runtime)
    counts = status.program_counts(runtime)
    rows = []
    for program in ProgramCatalog(runtime).all():
        found = counts.get(program.id, status.ProgramCounts({}, 0, 0))
        rows.append({"program": program, "completed": found.completed, "withdrawn": found.withdrawn,
                     "steps": [(n, step, found.per_step.get(n, 0))
                               for n, step in enumerate(program.definition.steps, start=1)]})
    return render_template("programs_list.html", rows=rows, fmt=display)


# --- the form ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LevelChoice:
    term_id: int
    label: str


def _level_choices(runtime: Runtime) -> list[LevelChoice]:
    reader = runtime.reader
    choices = []
    for level, depth in level_tree(reader.levels()):
        mode = level_mode(reader.level_meta(level.term_id))
        hint = str(_MODES[mode]) if mode in _MODES else gettext("no certificates")
        choices.append(LevelChoice(level.term_id, f"{'— ' * depth}{level.name} (#{level.term_id}, {hint})"))
    return choices


def _render_form(runtime: Runtime, form: ProgramForm, *, program: ProgramView | None = None,
                 errors: Mapping[str, str] | None = None, warnings: list[str] | None = None, status_code: int = 200):
    choices = _level_choices(runtime)
    known = {c.term_id for c in choices}
    missing = sorted({int(r.term_id) for r in form.rows if r.term_id.isdecimal() and len(r.term_id) <= 18} - known)
    choices += [LevelChoice(t, pgettext("programs", "level #{id} (not on the site)", id=t)) for t in missing]
    action = (url_for(".program_edit", program_id=program.id) if program else url_for(".program_new"))
    return render_template("programs_form.html", form=form, program=program, errors=errors or {},
                           warnings=warnings or [], levels=choices, units=UNITS, placeholders=PLACEHOLDERS,
                           action=action, max_steps=MAX_STEPS), status_code


def _row_button(form_data: Mapping[str, str]) -> tuple[str, int]:
    """Which of the form's buttons was pressed: ``save``, ``add`` or (``remove``, row number)."""
    if form_data.get("add"):
        return "add", 0
    raw = (form_data.get("remove") or "").strip()
    if raw.isdecimal() and len(raw) < 4:
        return "remove", int(raw)
    return "save", 0


def _warning_texts(runtime: Runtime, display: Display, view: ProgramView) -> list[str]:
    warnings = [display.field_problem(p) for p in view.warnings]
    url = view.definition.webhook_url
    if url:
        try:
            check_destination(url, runtime.settings.webhooks.allow_private_destinations)
        except DestinationRefused as exc:
            # Not blocking: an imported program keeps its URL until someone changes it, and every
            # delivery is checked again (and refused) anyway.
            warnings.append(gettext("Deliveries to the webhook URL will be refused: {detail}", detail=say(exc.said)))
    return warnings


def _save(runtime: Runtime, program: ProgramView | None):
    button, row = _row_button(request.form)
    form = ProgramForm.from_request(request.form, program.definition.legacy_post_id if program else None)
    if button == "add":
        return _render_form(runtime, form.add_row(), program=program)
    if button == "remove":
        return _render_form(runtime, form.remove_row(row), program=program)
    form = form.compacted()
    definition, errors = form.definition()
    display = _display(runtime)
    if definition is None:
        return _render_form(runtime, form, program=program, errors=errors, status_code=422)
    catalog = ProgramCatalog(runtime)
    try:
        view = (catalog.update(program.id, definition, _actor()) if program
                else catalog.create(definition, _actor()))
    except ProgramRejected as exc:
        errors = {}
        for problem in exc.problems:
            if problem.blocking:
                errors.setdefault(problem.field, display.problem(problem))
        warnings = [display.field_problem(p) for p in exc.problems if not p.blocking]
        return _render_form(runtime, form, program=program, errors=errors, warnings=warnings, status_code=422)
    except LookupError:
        abort(404)
    flash(gettext("Program «{name}» saved.", name=view.definition.name), "ok")
    for warning in _warning_texts(runtime, display, view):
        flash(warning, "warn")
    return redirect(url_for(".program_page", program_id=view.id))


@blueprint.route("/programs/new", methods=["GET", "POST"])
@login_required
def program_new():
    runtime = _runtime()
    if request.method == "POST":
        return _save(runtime, None)
    return _render_form(runtime, ProgramForm())


@blueprint.route("/programs/<int:program_id>/edit", methods=["GET", "POST"])
@login_required
def program_edit(program_id: int):
    runtime = _runtime()
    program = _program_or_404(runtime, program_id)
    if request.method == "POST":
        return _save(runtime, program)
    return _render_form(runtime, ProgramForm.from_definition(program.definition), program=program)


@blueprint.post("/programs/<int:program_id>/status")
@login_required
def program_set_status(program_id: int):
    wanted = request.form.get("status", "")
    if wanted not in ("active", "archived"):
        abort(400, description=gettext("Unknown program status."))
    runtime = _runtime()
    try:
        ProgramCatalog(runtime).set_status(program_id, wanted, _actor())
    except LookupError:
        abort(404, description=gettext("There is no program #{id}.", id=program_id))
    flash(gettext("The program is active again.") if wanted == "active" else gettext("The program is archived."), "ok")
    return redirect(url_for(".program_page", program_id=program_id))


# --- a program's page ------------------------------------------------------------------------------

def _int_arg(args: Mapping[str, str], name: str, low: int, high: int, problems: list[str]) -> int | None:
    raw = (args.get(name) or "").strip()
    if not raw:
        return None
    if raw.isdecimal() and len(raw) <= 18 and low <= int(raw) <= high:
        return int(raw)
    problems.append(gettext("Ignored the parameter {name}={value}: not a usable value.", name=name, value=raw[:40]))
    return None


@blueprint.get("/programs/<int:program_id>")
@login_required
def program_page(program_id: int):
    runtime = _runtime()
    program = _program_or_404(runtime, program_id)
    total_steps = len(program.definition.steps)
    problems: list[str] = []
    stalled_days = _int_arg(request.args, "stalled", 1, MAX_STALLED_DAYS, problems) or status.STALLED_AFTER_DAYS
    step = _int_arg(request.args, "step", 1, max(total_steps, 1), problems)
    wanted_status = (request.args.get("status") or "").strip()
    if wanted_status and wanted_status not in LEARNER_STATUSES:
        problems.append(gettext("Ignored the parameter {name}={value}: not a usable value.", name="status", value=wanted_status[:40]))
        wanted_status = ""
    after = _int_arg(request.args, "after", 1, 10**18, problems) or 0
    find = " ".join((request.args.get("find") or "").split())[:MAX_USER_TEXT]
    candidates = runtime.reader.find_users(find, limit=FOUND_USERS + 1) if find else []
    overview = status.program_status(runtime, program_id, stalled_after_days=stalled_days)
    page = status.learners(runtime, program_id, step=step, status=wanted_status or None, after_id=after,
                           limit=PER_PAGE + 1)

    def url(**changes: Any) -> str:
        values = {"stalled": stalled_days if stalled_days != status.STALLED_AFTER_DAYS else None, "step": step,
                  "status": wanted_status or None, "after": after or None, **changes}
        return url_for(".program_page", program_id=program_id, **{k: v for k, v in values.items() if v})

    return render_template(
        "programs_detail.html", program=program, overview=overview, learners=page[:PER_PAGE], fmt=_display(runtime),
        problems=problems, stalled_days=stalled_days, stalled_choices=sorted({*STALLED_CHOICES, stalled_days}),
        step=step, learner_status=wanted_status, statuses=LEARNER_STATUSES, total_steps=total_steps,
        next_url=url(after=page[PER_PAGE - 1].enrolment_id) if len(page) > PER_PAGE else None,
        first_url=url(after=None) if after else None, here=url(), reset_url=url(step=None, status=None, after=None),
        find=find, candidates=candidates[:FOUND_USERS], more_candidates=len(candidates) > FOUND_USERS,
        grant_first_asked=request.args.get("grant_first") == "1")


MAX_USER_TEXT = 200


def _user_ref(raw: str) -> int | str | None:
    """A user id, or the text of an e-mail, a login or a name; None for nothing usable."""
    raw = " ".join(raw.split())
    if raw.isdecimal() and len(raw) <= 18:
        return int(raw)
    if 0 < len(raw) <= MAX_USER_TEXT:
        return raw
    return None


@blueprint.post("/programs/<int:program_id>/enrol")
@login_required
def program_enrol(program_id: int):
    runtime = _runtime()
    _program_or_404(runtime, program_id)
    back = url_for(".program_page", program_id=program_id)
    raw = request.form.get("user", "")
    ref = _user_ref(raw)
    if ref is None:
        flash(gettext("Enter a WordPress user ID, e-mail, login or name (got «{value}»).", value=raw.strip()[:60]), "error")
        return redirect(back)
    try:
        result = _progression().enrol(program_id, ref, source="ui", actor=_actor(),
                                      grant_first=bool(request.form.get("grant_first")))
    except LookupError:
        if isinstance(ref, str):   # not an id, e-mail or login: a name to look for; the page lists who matches
            return redirect(url_for(".program_page", program_id=program_id, find=ref,
                                    grant_first="1" if request.form.get("grant_first") else None) + "#enrol")
        flash(gettext("No WordPress user {value}.", value=str(ref)), "error")
    except EnrolmentRefused:
        flash(gettext("The program is archived: make it active before enrolling anyone."), "error")
    except IntakeRejected as exc:
        flash(gettext("Not enrolled: step 1 cannot be granted. {detail}", detail=exc.message), "error")
    else:
        if not result.created:
            flash(gettext("Already enrolled (enrolment #{id}): nothing changed.", id=result.enrolment_id), "warn")
        elif result.grant_id:
            flash(gettext("Enrolled (enrolment #{id}); step 1 is being granted (grant "
                          "{grant}).", id=result.enrolment_id, grant=result.grant_id), "ok")
        else:
            flash(gettext("Enrolled (enrolment #{id}).", id=result.enrolment_id), "ok")
    return redirect(back)


# --- one learner ---------------------------------------------------------------------------------------

@blueprint.get("/programs/enrolments/<int:enrolment_id>")
@login_required
def enrolment_page(enrolment_id: int):
    runtime = _runtime()
    found = status.enrolment(runtime, enrolment_id)
    if found is None:
        abort(404, description=gettext("There is no enrolment #{id}.", id=enrolment_id))
    program = _program_or_404(runtime, found.program_id)
    return render_template("programs_timeline.html", enrolment=found, program=program,
                           user=runtime.reader.user(found.user_id), events=status.timeline(runtime, enrolment_id),
                           fmt=_display(runtime), total_steps=len(program.definition.steps))


@blueprint.post("/programs/enrolments/<int:enrolment_id>/withdraw")
@login_required
def enrolment_withdraw(enrolment_id: int):
    runtime = _runtime()
    found = status.enrolment(runtime, enrolment_id)
    if found is None:
        abort(404, description=gettext("There is no enrolment #{id}.", id=enrolment_id))
    if _progression().withdraw(enrolment_id, _actor()):
        flash(gettext("Enrolment #{id} withdrawn.", id=enrolment_id), "ok")
    else:
        flash(gettext("Enrolment #{id} is not in progress: nothing to withdraw.", id=enrolment_id), "error")
    return redirect(safe_next((request.form.get("next") or "").rstrip("?"))
                    or url_for(".program_page", program_id=found.program_id))


# --- legacy import ---------------------------------------------------------------------------------------

def _render_plan(runtime: Runtime, plan: legacy.ImportPlan, *, refused: bool = False, status_code: int = 200):
    problems: list[str] = []
    pages = max(1, -(-len(plan.enrolments) // IMPORT_PER_PAGE))
    page = _int_arg(request.args, "page", 1, pages, problems) or 1
    shown = plan.enrolments[(page - 1) * IMPORT_PER_PAGE: page * IMPORT_PER_PAGE]
    titles = {p.post_id: p.title for p in plan.programs}
    return render_template(
        "programs_import.html", plan=plan, enrolments=shown, titles=titles, fmt=_display(runtime), problems=problems,
        refused=refused, page=page, pages=pages,
        new_programs=plan.new_programs, new_enrolments=plan.new_enrolments,
        prev_url=url_for(".legacy_import", page=page - 1) if page > 1 else None,
        next_url=url_for(".legacy_import", page=page + 1) if page < pages else None), status_code


@blueprint.route("/programs/import", methods=["GET", "POST"])
@login_required
def legacy_import():
    runtime = _runtime()
    # Planned again on POST: what is written is what the site holds now, not what the page showed.
    plan = legacy.plan_import(runtime)
    if request.method == "GET":
        return _render_plan(runtime, plan)
    if plan.blocking:
        return _render_plan(runtime, plan, refused=True, status_code=409)
    try:
        counts = legacy.apply_import(runtime, plan, actor=_actor())
    except legacy.LegacyDataError:
        return _render_plan(runtime, plan, refused=True, status_code=409)
    log.info("legacy programs imported by %s: %s", _actor(), counts)
    return render_template("programs_import_done.html", counts=counts)
