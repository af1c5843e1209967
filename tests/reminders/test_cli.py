"""`mlsidecar remind`: dry run as a table or JSON, a real run, and the operator's mistakes."""

from __future__ import annotations

import json
from datetime import timedelta

from click.testing import CliRunner

from sidecar.cli import cli


def invoke(school, *args: str):
    return CliRunner().invoke(cli, list(args), obj={"settings": school.settings, "clock": school.clock},
                              catch_exceptions=False)


def test_dry_run_table_shows_what_would_be_sent_and_why(school, smtp_server):
    _, _, inbox = smtp_server
    school.schedule(days=(3, 10, None), admin_days=None)
    school.learner(1, "anna@example.com")
    school.expired(1, days_ago=3)
    school.learner(2, blocked=True)
    school.expired(2, days_ago=3)
    result = invoke(school, "remind", "--dry-run")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if line.startswith("USER"))
    assert header.split()[:3] == ["USER", "EMAIL", "NAME"]
    row = next(line for line in lines if line.startswith("1 "))
    assert "anna@example.com" in row and " send " in row
    assert "blocked" in next(line for line in lines if line.startswith("2 "))
    assert "dry run" in result.output and inbox.messages == []


def test_dry_run_lists_too_late_chains_and_says_what_a_run_would_record(school, smtp_server):
    school.schedule(days=(3, 10, None), admin_days=None)
    school.learner(1, "anna@example.com")
    school.expired(1, days_ago=3)
    school.learner(2, "old@example.com")
    school.expired(2, days_ago=400)
    result = invoke(school, "remind", "--dry-run")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if line.startswith("USER"))
    assert header.split()[-3:] == ["ACTION", "REASON", "RECORDED"]
    due = next(line for line in lines if line.startswith("1 "))
    assert due.split()[-2:] == ["send", "yes"]
    old = next(line for line in lines if line.startswith("2 "))
    assert "old@example.com" in old and old.split()[-3:] == ["skip", "too_late", "no"]
    assert "skip:too_late 1" in result.output


def test_dry_run_json_for_a_later_day_and_one_level(school, smtp_server):
    school.schedule()
    school.learner(1)
    school.expired(1, days_ago=0)
    day = (school.today + timedelta(days=3)).isoformat()
    result = invoke(school, "remind", "--dry-run", "--date", day, "--level", "30", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    assert data["day"] == day and data["dry_run"] is True and data["levels"] == [30]
    assert [(i["user_id"], i["step"], i["action"]) for i in data["items"]] == [(1, 1, "send")]
    assert data["send"] is None


def test_a_real_run_sends_and_reports(school, smtp_server):
    _, _, inbox = smtp_server
    school.schedule()
    school.learner(1)
    school.expired(1, days_ago=3)
    result = invoke(school, "remind", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    assert data["send"]["sent"] == 1 and len(inbox.messages) == 1


def test_operator_mistakes_are_named(school, smtp_server):
    school.schedule()
    result = CliRunner().invoke(cli, ["remind", "--date", "2026-12-01"], obj={"settings": school.settings,
                                                                          "clock": school.clock})
    assert result.exit_code == 2 and "--dry-run" in result.output
    result = CliRunner().invoke(cli, ["remind", "--dry-run", "--level", "999"], obj={"settings": school.settings,
                                                                                  "clock": school.clock})
    assert result.exit_code == 2 and "no access level 999" in result.output
    result = CliRunner().invoke(cli, ["remind", "--dry-run", "--date", "24.11.2026"],
                                obj={"settings": school.settings, "clock": school.clock})
    assert result.exit_code == 2 and "24.11.2026" in result.output


def test_date_means_what_it_means_in_the_other_commands(school, smtp_server):
    """A UTC day; a real run works for today only, so another day is a preview (as for `sleepers refresh`)."""
    _, _, inbox = smtp_server
    school.schedule()
    school.learner(1)
    school.expired(1, days_ago=3)
    tomorrow = (school.today + timedelta(days=1)).isoformat()
    refused = invoke(school, "remind", "--date", tomorrow)
    assert refused.exit_code == 2
    assert f"{tomorrow} is not today ({school.today}, UTC): another day can only be previewed: add --dry-run" \
        in refused.output
    bad = invoke(school, "remind", "--dry-run", "--date", "2026-13-01")
    assert bad.exit_code == 2 and "'2026-13-01' is not a calendar day written YYYY-MM-DD" in bad.output

    today = invoke(school, "remind", "--date", school.today.isoformat(), "--format", "json")
    assert today.exit_code == 0, today.output
    data = json.loads(today.output[today.output.index("{"):])
    assert data["day"] == school.today.isoformat() and data["send"]["sent"] == 1 and len(inbox.messages) == 1


def test_a_run_in_progress_elsewhere_is_refused(school, smtp_server):
    from sidecar.store import leases
    from sidecar.jobs import REMINDERS_DAILY_JOB

    leases.try_acquire(school.runtime.sessions, REMINDERS_DAILY_JOB, "other-host:1", timedelta(hours=1),
                       school.clock.now())
    result = CliRunner().invoke(cli, ["remind"], obj={"settings": school.settings, "clock": school.clock})
    assert result.exit_code == 1 and "in progress elsewhere (other-host:1)" in result.output
