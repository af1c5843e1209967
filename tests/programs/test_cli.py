"""`mlsidecar programs list|status|enrol|import`: output, dry runs, and the operator's mistakes."""

from __future__ import annotations

import json

import sqlalchemy as sa
from click.testing import CliRunner

from sidecar.cli import cli
from sidecar.domain.messages import Message
from sidecar.store.monitor_models import CertificateClassRow
from sidecar.store.models import AuditEvent
from sidecar.store.program_models import Enrolment, Program, ProgramInbox

PROGRAMS_TOML = """
[[program]]
name = "Йога и английский"
grant_first_step = true
steps = [
  { term_id = 10, duration = 1, units = "months" },
  { term_id = 7, duration = 1, units = "months" },
]
[program.notify]
email = "manager@school.example"
step_subject = "[user_login] → шаг [next_step]"
"""


def invoke(runtime, *args: str):
    return CliRunner().invoke(cli, list(args), obj={"settings": runtime.settings}, catch_exceptions=False)


def test_toml_import_is_a_dry_run_until_applied(runtime, tmp_path):
    path = tmp_path / "programs.toml"
    path.write_text(PROGRAMS_TOML, encoding="utf-8")
    dry = invoke(runtime, "programs", "import", "--toml", str(path))
    assert dry.exit_code == 0, dry.output
    assert "create: 'Йога и английский': 10 (1 months) → 7 (1 months)" in dry.output
    with runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Program)) == 0
    applied = invoke(runtime, "programs", "import", "--toml", str(path), "--apply")
    assert applied.exit_code == 0 and "created 1, updated 0, unchanged 0" in applied.output
    again = invoke(runtime, "programs", "import", "--toml", str(path), "--apply")
    assert "created 0, updated 0, unchanged 1" in again.output
    listed = json.loads(invoke(runtime, "programs", "list", "--format", "json").output)
    assert [(p["name"], [s["term_id"] for s in p["steps"]]) for p in listed] == [("Йога и английский", [10, 7])]


def test_toml_import_counts_only_what_it_changes(runtime, tmp_path):
    path = tmp_path / "programs.toml"
    path.write_text(PROGRAMS_TOML, encoding="utf-8")
    invoke(runtime, "programs", "import", "--toml", str(path), "--apply")

    same = invoke(runtime, "programs", "import", "--toml", str(path))
    assert "unchanged: program 1: 'Йога и английский'" in same.output
    assert "dry run: 0 to create, 0 to update, 1 unchanged; nothing to write" in same.output
    assert json.loads(invoke(runtime, "programs", "import", "--toml", str(path), "--apply", "--format", "json").output) == {
        "created": 0, "updated": 0, "unchanged": 1}

    path.write_text(PROGRAMS_TOML.replace("term_id = 7, duration = 1", "term_id = 7, duration = 2"), encoding="utf-8")
    changed = invoke(runtime, "programs", "import", "--toml", str(path))
    assert "update program 1 (steps): 'Йога и английский': 10 (1 months) → 7 (2 months)" in changed.output
    assert "dry run: 0 to create, 1 to update, 0 unchanged; add --apply to write" in changed.output
    assert "created 0, updated 1, unchanged 0" in invoke(runtime, "programs", "import", "--toml", str(path), "--apply").output
    with runtime.sessions() as session:
        changes = session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)
                                 .where(AuditEvent.action == "program.changed"))
    assert changes == 1   # the applies that changed nothing wrote nothing, not even an audit entry


def test_a_bad_toml_file_is_refused_whole_with_every_problem(runtime, tmp_path):
    path = tmp_path / "programs.toml"
    path.write_text(PROGRAMS_TOML.replace("term_id = 7", "term_id = 999").replace('units = "months" },\n]',
                                                                                  'units = "weeks" },\n]'), encoding="utf-8")
    result = CliRunner().invoke(cli, ["programs", "import", "--toml", str(path), "--apply"], obj={"settings": runtime.settings})
    assert result.exit_code == 1 and "nothing was written" in result.output
    assert "steps.1.units" in result.output
    path.write_text(PROGRAMS_TOML.replace("term_id = 7", "term_id = 999"), encoding="utf-8")
    result = CliRunner().invoke(cli, ["programs", "import", "--toml", str(path), "--apply"], obj={"settings": runtime.settings})
    assert result.exit_code == 1 and "access level 999 does not exist" in result.output
    path.write_text("[[program]\nname=", encoding="utf-8")
    result = CliRunner().invoke(cli, ["programs", "import", "--toml", str(path)], obj={"settings": runtime.settings})
    assert result.exit_code == 1 and "not valid TOML" in result.output
    with runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Program)) == 0


def test_legacy_import_dry_run_then_apply(runtime):
    dry = invoke(runtime, "programs", "import", "--legacy")
    assert dry.exit_code == 0, dry.output
    assert "program post 2 'Сборный курс №1" in dry.output and "new" in dry.output
    # The plan's messages carry codes for the pages; the CLI prints the English sentences it always printed.
    assert ("  note  step 1's duration is not taken from the legacy form (it always stored 1 month); enrolment "
            "does not grant step 1 unless you switch it on\n") in dry.output
    assert "mlp_current_step: step " in dry.output
    assert "add --apply" in dry.output
    applied = invoke(runtime, "programs", "import", "--legacy", "--apply")
    assert applied.exit_code == 0 and "imported 1 program(s)" in applied.output
    status = invoke(runtime, "programs", "status", "1")
    assert status.exit_code == 0 and "STEP" in status.output and "10 Йога для начинающих" in status.output


def test_legacy_import_dry_run_counts_what_is_new_like_the_page(runtime):
    from sidecar.programs.legacy import plan_import

    enrolments = len(plan_import(runtime).enrolments)
    dry = invoke(runtime, "programs", "import", "--legacy")
    assert f"dry run: 1 program(s) (1 new), {enrolments} enrolment(s) ({enrolments} new); add --apply" in dry.output
    invoke(runtime, "programs", "import", "--legacy", "--apply")
    again = invoke(runtime, "programs", "import", "--legacy")
    assert again.exit_code == 0
    assert f"dry run: 1 program(s) (0 new), {enrolments} enrolment(s) (0 new); nothing new to import" in again.output
    shown = invoke(runtime, "programs", "import", "--legacy", "--format", "json").output
    data = json.loads(shown[shown.index("{"):shown.rindex("}") + 1])   # the dry run's last line goes to stderr
    assert (data["new_programs"], data["new_enrolments"]) == (0, 0)
    applied = invoke(runtime, "programs", "import", "--legacy", "--apply")
    assert f"imported 0 program(s) and 0 enrolment(s) (skipped 1 and {enrolments} already imported)" in applied.output


def test_enrol_and_status(runtime, tmp_path):
    path = tmp_path / "programs.toml"
    path.write_text(PROGRAMS_TOML.replace("grant_first_step = true", "grant_first_step = false"), encoding="utf-8")
    invoke(runtime, "programs", "import", "--toml", str(path), "--apply")
    user = runtime.reader.user(5)
    result = invoke(runtime, "programs", "enrol", "1", "--user", user.email)
    assert result.exit_code == 0 and result.output.startswith("enrolled: enrolment 1")
    result = invoke(runtime, "programs", "enrol", "1", "--user", "5")
    assert "already enrolled (enrolment 1); nothing changed" in result.output
    with runtime.sessions() as session:
        assert session.scalar(sa.select(Enrolment.source)) == "cli"
    now = runtime.clock.now()
    with runtime.sessions.begin() as session:   # a certificate whose next step cannot be granted yet
        session.add(CertificateClassRow(certificate_id=9001, user_id=5, level_id=10, cls="manual", reason="test",
                                        date_issue=now.date(), create_date=now.date(), responsible_person=1,
                                        fingerprint="f", first_seen_at=now, checked_at=now, deleted_at=None))
        why = Message("programs.step_waits", {"step": 2, "detail": "no product for level 7"})
        session.add(ProgramInbox(certificate_id=9001, queued_at=now, attempts=1, last_error=why.stored()))
    data = json.loads(invoke(runtime, "programs", "status", "1", "--format", "json").output)
    assert [s["learners"] for s in data["steps"]] == [1, 0]
    assert data["waiting"] == [{"certificate_id": 9001, "why": "step 2 cannot be granted: no product for level 7"}]
    shown = invoke(runtime, "programs", "status", "1").output
    assert "waiting: certificate 9001: step 2 cannot be granted: no product for level 7\n" in shown
    bad = CliRunner().invoke(cli, ["programs", "enrol", "1", "--user", "ghost@example.com"], obj={"settings": runtime.settings})
    assert bad.exit_code == 2 and "no WordPress user ghost@example.com" in bad.output
    bad = CliRunner().invoke(cli, ["programs", "status", "42"], obj={"settings": runtime.settings})
    assert bad.exit_code == 2 and "no program 42" in bad.output
    both = CliRunner().invoke(cli, ["programs", "import"], obj={"settings": runtime.settings})
    assert both.exit_code == 2 and "--legacy or --toml" in both.output
