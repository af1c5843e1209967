"""Importing the legacy bundle plugin's programs and progress: a dry run first, then all or nothing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sidecar.programs.legacy import LegacyDataError, apply_import, describe, plan_import
from sidecar.store.program_models import Enrolment, Program, ProgramStep


def site_table(emulator, short: str) -> sa.Table:
    *_, engine = emulator
    return sa.Table("wp_" + short, sa.MetaData(), autoload_with=engine)


def test_dry_run_shows_what_would_be_created_and_writes_nothing(runtime):
    plan = plan_import(runtime)
    [program] = plan.programs
    assert program.definition is not None and program.problems == []
    assert [(s.term_id, s.duration, s.units) for s in program.definition.steps] == [(10, 1, "months"), (7, 2, "months")]
    assert program.definition.notify_email == "manager@school.example"
    assert program.definition.notify_step_subject == "[user_login] перешёл к шагу [next_step]"
    assert program.definition.webhook_url == "http://127.0.0.1:9/program-hook"
    assert [note.code for note in program.notes] == ["programs.legacy.first_duration"]
    assert "step 1's duration is not taken from the legacy form" in program.notes[0].english()
    assert plan.enrolments and all(e.post_id == program.post_id for e in plan.enrolments)
    assert describe(plan)["blocking"] == []
    with runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Program)) == 0


def test_import_creates_programs_and_enrolments_once(runtime):
    plan = plan_import(runtime)
    counts = apply_import(runtime, plan, actor="admin")
    assert counts["programs"] == 1 and counts["enrolments"] == len(plan.enrolments)
    with runtime.sessions() as session:
        program = session.scalar(sa.select(Program))
        assert program.legacy_post_id == plan.programs[0].post_id and program.counting == "manual"
        assert program.grant_first_step is False
        assert [s.term_id for s in session.scalars(sa.select(ProgramStep).order_by(ProgramStep.position))] == [10, 7]
        enrolments = list(session.scalars(sa.select(Enrolment)))
    assert {e.source for e in enrolments} == {"legacy"}
    again = apply_import(runtime, plan_import(runtime), actor="admin")
    assert again["programs"] == 0 and again["enrolments"] == 0 and again["skipped_programs"] == 1


def test_progress_is_taken_from_keys_and_certificates_not_the_index_alone(runtime, emulator):
    um = site_table(emulator, "usermeta")
    *_, engine = emulator
    plan = plan_import(runtime)
    learner = plan.enrolments[0].user_id
    with engine.begin() as conn:
        conn.execute(um.update().where(um.c.user_id == learner, um.c.meta_key == "mlp_current_step")
                     .values(meta_value="0"))
    # The plugin granted step 2 (level 7) with source program_flow; the index says step 1.
    tk, km = site_table(emulator, "memberlux_term_keys"), site_table(emulator, "memberlux_keys_meta")
    with engine.begin() as conn:
        key_id = conn.execute(sa.select(sa.func.max(tk.c.id))).scalar() + 1
        conn.execute(tk.insert().values(id=key_id, term_id=7, user_id=learner, key=f"flow-{key_id}", key_type="wpm_term_keys",
                                        status="used", sent=0, is_banned=0, duration=2, units="months",
                                        date_start="2026-11-01", date_end="2027-01-01", date_registered="2026-11-01 10:00:00",
                                        is_unlimited=0))
        conn.execute(km.insert().values(key_id=key_id, activation_datetime="2026-11-01 10:00:00", source="program_flow"))
    entry = next(e for e in plan_import(runtime).enrolments if e.user_id == learner)
    assert entry.current_step == 1
    said = {(m.code, m.params["step"]) for m in entry.evidence if "step" in m.params}
    assert {("programs.legacy.evidence_keys", 2), ("programs.legacy.evidence_index", 1)} <= said
    english = [m.english() for m in entry.evidence]
    assert "program_flow keys: step 2" in english and "mlp_current_step: step 1" in english
    assert describe(plan_import(runtime))["enrolments"][0]["evidence"] == english   # the CLI's JSON: English


@pytest.mark.parametrize(("value", "message"), [
    ("a:2:{i:0;", "not valid PHP-serialized data"),
    ('s:5:"hello";', "not a non-empty list"),
    ('a:1:{i:0;a:2:{s:7:"term_id";s:3:"abc";s:8:"duration";i:1;}}', "non-numeric term_id"),
    ('a:1:{i:0;a:3:{s:7:"term_id";i:999;s:8:"duration";i:1;s:5:"units";s:6:"months";}}', "does not exist"),
])
def test_malformed_legacy_data_is_named_and_nothing_is_imported(runtime, emulator, value, message):
    pm = site_table(emulator, "postmeta")
    *_, engine = emulator
    with engine.begin() as conn:
        conn.execute(pm.update().where(pm.c.meta_key == "mlp_steps").values(meta_value=value))
    plan = plan_import(runtime)
    assert any(message in problem for problem in plan.blocking), plan.blocking
    with pytest.raises(LegacyDataError, match="nothing was imported"):
        apply_import(runtime, plan, actor="admin")
    with runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Program)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(Enrolment)) == 0
