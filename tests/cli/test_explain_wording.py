"""`mlsidecar explain` words a learner's access as it stands on the day asked — today by default, or --date:
access that has not ended is "active until" its end, access paid ahead after a gap says when it opens
again, and only access that has ended reads "expired"."""

from __future__ import annotations

import json
from datetime import date

from click.testing import CliRunner

from sidecar.cli import cli
from tests.reminders.school import LEVEL

TODAY = date(2026, 11, 24)  # the school's clock


def explain(school, *args: str):
    result = CliRunner().invoke(cli, ["explain", "--user", "1", "--level", str(LEVEL), *args],
                                obj={"settings": school.settings, "clock": school.clock}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def access_lines(output: str) -> list[str]:
    """What the text output says about the access: the lines between the verdict's summary and the last grant."""
    lines = output.splitlines()
    verdict = next(i for i, line in enumerate(lines) if line.startswith("verdict"))
    last_grant = next(i for i, line in enumerate(lines) if line.startswith("last grant"))
    return lines[verdict + 2:last_grant]


def test_an_active_learner_is_active_until_the_end_of_the_key_today_and_on_a_later_day(school_factory):
    school = school_factory()
    school.learner(1)
    school.key(1, date(2026, 11, 1), date(2027, 6, 5))

    for args in ((), ("--date", "2027-01-15")):
        result = explain(school, *args)
        assert "verdict   active\n" in result.output
        assert access_lines(result.output) == ["access    active until 2027-06-05 (last day with access 2027-06-04)"]
        assert not any(line.startswith("expired") for line in result.output.splitlines())
    assert f"Active: a key opens the level on {TODAY}; access runs until 2027-06-05." in explain(school).output


def test_stacked_renewals_are_one_unbroken_access(school_factory):
    school = school_factory()
    school.learner(1)
    school.key(1, date(2026, 11, 1), date(2026, 12, 1))
    school.key(1, date(2026, 12, 1), date(2027, 1, 1))
    assert "access    active until 2027-01-01 (last day with access 2026-12-31)" in explain(school).output


def test_access_paid_ahead_after_a_gap_says_when_the_level_opens_again(school_factory):
    school = school_factory()
    school.learner(1)
    school.key(1, date(2026, 11, 1), date(2026, 12, 1))
    school.key(1, date(2027, 2, 1), date(2027, 3, 1))

    today = explain(school).output
    assert access_lines(today) == [
        "access    active until 2026-12-01 (last day with access 2026-11-30)",
        "          paid ahead: again from 2027-02-01 until 2027-03-01 (last day with access 2027-02-28)",
    ]
    assert "access runs until 2026-12-01; a key paid ahead opens it again on 2027-02-01, until 2027-03-01." in today

    in_the_gap = explain(school, "--date", "2026-12-15").output
    assert "verdict   renewed\n" in in_the_gap
    assert access_lines(in_the_gap) == [
        "access    none on 2026-12-15; paid ahead: again from 2027-02-01 until 2027-03-01 "
        "(last day with access 2027-02-28)"]
    assert ("no access on 2026-12-15, but a key paid ahead opens the level again on 2027-02-01 and access runs "
            "until 2027-03-01.") in in_the_gap


def test_ended_access_reads_expired_counted_from_the_day_asked(school_factory):
    school = school_factory()
    school.learner(1)
    school.key(1, date(2026, 10, 1), date(2026, 11, 4))

    today = explain(school).output
    assert "verdict   sleeper (SLEEPER)" in today
    assert access_lines(today) == ["expired   2026-11-04 (last day with access 2026-11-03)"]
    assert "Sleeper: access ended on 2026-11-04 (20 days before 2026-11-24)" in today
    later = explain(school, "--date", "2026-12-04").output
    assert "Sleeper: access ended on 2026-11-04 (30 days before 2026-12-04)" in later
    on_the_day = explain(school, "--date", "2026-11-04").output
    assert "Sleeper: access ended on 2026-11-04 (the day evaluated)" in on_the_day
    before = explain(school, "--date", "2026-11-03").output
    assert "access    active until 2026-11-04 (last day with access 2026-11-03)" in before


def test_an_unlimited_key_has_no_end(school_factory):
    school = school_factory()
    school.learner(1)
    school.key(1, date(2026, 11, 1), date(2026, 12, 1), unlimited=True)
    output = explain(school).output
    assert "verdict   unlimited" in output
    assert access_lines(output) == ["access    unlimited (a key without an end)"]


def test_json_carries_the_end_of_the_access_and_the_day_it_opens_again(school_factory):
    school = school_factory()
    school.learner(1)
    school.key(1, date(2026, 11, 1), date(2026, 12, 1))
    school.key(1, date(2027, 2, 1), date(2027, 3, 1))
    data = json.loads(explain(school, "--format", "json").output)
    assert data["reason"] == "active"
    assert data["access_until"] == "2026-12-01" and data["access_resumes"] == "2027-02-01"
    assert data["expired_on"] == "2027-03-01"  # X: the end of the latest key, as the rule defines it


def test_explain_says_whether_reminders_may_reach_the_learner_at_all(school_factory):
    from datetime import datetime

    from sidecar.reminders.unsubscribe import unsubscribe

    school = school_factory()
    school.learner(1)
    school.key(1, date(2026, 9, 1), date(2026, 11, 1))
    assert "reminders may be sent (no unsubscribe on record)" in explain(school).output
    assert json.loads(explain(school, "--format", "json").output)["reminders_stopped_by"] == []

    with school.writer.begin() as conn:
        conn.execute(school.t("memberlux_user_mailing_list").insert().values(
            user_id=1, term_id=LEVEL, mailing_datetime=datetime(2026, 1, 5, 10), status="unsubscribe"))
    assert "reminders none: unsubscribed from MemberLux's letters" in explain(school).output
    unsubscribe(school.runtime.sessions, 1, email="x", source="link", actor="learner", at=school.clock.now())
    record = json.loads(explain(school, "--format", "json").output)
    assert record["reminders_stopped_by"] == ["unsubscribed", "memberlux_unsubscribed"]
