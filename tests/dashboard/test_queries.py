"""The dashboard's store statements on SQLite and MariaDB: grants per UTC day by level, channel and outcome
(the day's boundaries included), letters per step, the trend summed per day, the day reminders started."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from sidecar.dashboard import queries
from sidecar.store import db as store_db
from sidecar.store.db import unit_of_work
from sidecar.store.grant_models import ALL_STATES, Grant
from sidecar.store.monitor_models import SleeperCount
from sidecar.store.reminder_models import Reminder
from tests.stores import migrate_store

DAY = date(2026, 11, 20)


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def sessions(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("mariadb_database")
    migrate_store(url)
    engine = store_db.create_store_engine(url)
    yield store_db.session_factory(engine)
    engine.dispose()


def at(day: date, hour: int = 12, minute: int = 0, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=timezone.utc)


def test_every_grant_status_has_an_outcome():
    assert {queries.grant_outcome(s) for s in ALL_STATES} == set(queries.OUTCOMES)
    assert [s for s in ALL_STATES if queries.grant_outcome(s) == "open"] == \
        ["queued", "fetching", "delivering", "unknown", "confirming"]


def test_grants_per_day_by_level_channel_and_outcome(sessions):
    moments = [(at(DAY, 0), "amocrm", "succeeded", 7), (at(DAY, 23, 59, 59), "amocrm", "succeeded", 7),
               (at(DAY, 10), "amocrm", "unknown", 7), (at(DAY, 11), "amocrm", "queued", 7),
               (at(DAY, 9), "api", "failed", 8), (at(DAY + timedelta(days=1), 0), "api", "cancelled", None),
               (at(DAY - timedelta(days=1), 23, 59, 59), "api", "succeeded", 7),      # before the period
               (at(DAY + timedelta(days=2), 0), "api", "succeeded", 7)]              # after it
    with unit_of_work(sessions) as session:
        for n, (moment, channel, status, level) in enumerate(moments):
            session.add(Grant(id=f"g{n}", request_hash="h", channel=channel, principal="p", meta={}, term_id=level,
                              status=status, next_attempt_at=moment, created_at=moment, updated_at=moment))
    with sessions() as session:
        found = queries.grants_per_day(session, DAY, DAY + timedelta(days=1))
    assert {(g.day, g.term_id, g.channel, g.outcome, g.grants) for g in found} == {
        (DAY, 7, "amocrm", "succeeded", 2), (DAY, 7, "amocrm", "open", 2), (DAY, 8, "api", "failed", 1),
        (DAY + timedelta(days=1), None, "api", "other", 1)}


def test_letters_trend_and_first_letter_day(sessions):
    with unit_of_work(sessions) as session:
        for n, (level, step, state, sent) in enumerate([(7, 1, "sent", DAY), (7, 1, "sent", DAY - timedelta(days=40)),
                                                        (7, 2, "sent", DAY), (7, 2, "failed", None), (8, 3, "sent", DAY),
                                                        (8, 4, "sent", DAY - timedelta(days=50))]):
            moment = at(sent or DAY)
            session.add(Reminder(user_id=n, term_id=level, expired_on=DAY - timedelta(days=60), step=step, state=state,
                                 due_on=DAY, planned_at=moment, updated_at=moment, sent_at=at(sent) if sent else None))
        for level, day, count in [(7, DAY, 5), (8, DAY, 2), (7, DAY - timedelta(days=1), 4), (7, DAY - timedelta(days=100), 9)]:
            session.add(SleeperCount(term_id=level, day=day, sleepers=count))
    with sessions() as session:
        assert queries.letters_sent(session) == {(7, 1): 2, (7, 2): 1, (8, 3): 1}
        assert queries.letters_sent(session, DAY - timedelta(days=29)) == {(7, 1): 1, (7, 2): 1, (8, 3): 1}
        assert queries.first_letter_days(session) == {7: DAY - timedelta(days=40), 8: DAY}   # the digest step is no letter
        since = DAY - timedelta(days=90)
        assert queries.sleeper_trend(session, since, None) == [(DAY - timedelta(days=1), 4), (DAY, 7)]
        assert queries.sleeper_trend(session, since, [8]) == [(DAY, 2)]
