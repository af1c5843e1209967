"""The reconstructed trend equals the live sleeper computation as of each past day.

Brute force on the small seeded site: for every day D of the window, a copy of the site keeps only the
keys activated by D and a copy of the store only the manual certificates issued by D (a certificate
deleted later is still there); the refresh's own live evaluation for D on those copies must count
exactly what the backfill stored for D."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from sidecar.bootstrap import build_runtime, store_url
from sidecar.clock import FixedClock
from sidecar.domain.access import activation_day
from sidecar.monitor.backfill import TrendBackfill
from sidecar.monitor.refresh import SleeperRefresher
from sidecar.store.monitor_models import CertificateClassRow, SleeperCount
from tests.monitor.support import LEVELS, START, TODAY
from tests.stores import migrate_store

WEEKS = 3       # 21 days, each rebuilt from scratch: enough to cross expiries and renewals of the small site


def _as_of(runtime, day: date, site_path, store_path, tmp_path, settings_for) -> dict[int, int]:
    """Sleepers per level on ``day`` by the live evaluation, on copies holding only what existed then."""
    site = tmp_path / f"site-{day}.sqlite"
    store = tmp_path / f"store-{day}.sqlite"
    shutil.copyfile(site_path, site)
    with sqlite3.connect(store_path) as source, sqlite3.connect(store) as target:
        source.backup(target)   # the store may hold recent writes in its WAL file
    later = [row.key_id for term_id in LEVELS for row in runtime.reader.key_rows_for_level(term_id)
             if (activation_day(row) or day) > day]
    engine = sa.create_engine(f"sqlite:///{site}")
    with engine.begin() as conn:
        for start in range(0, len(later), 500):
            conn.execute(sa.text(f"DELETE FROM wp_memberlux_term_keys WHERE id IN ({','.join(map(str, later[start:start + 500]))})"))
    engine.dispose()
    engine = sa.create_engine(f"sqlite:///{store}")
    with engine.begin() as conn:
        rows = conn.execute(sa.select(CertificateClassRow.certificate_id, CertificateClassRow.date_issue,
                                      CertificateClassRow.create_date, CertificateClassRow.deleted_at)).all()
        for cert_id, issued, created, deleted_at in rows:
            when = issued or created
            if when is not None and when > day:
                conn.execute(sa.delete(CertificateClassRow).where(CertificateClassRow.certificate_id == cert_id))
            elif deleted_at is not None and deleted_at.date() > day:
                conn.execute(sa.update(CertificateClassRow).where(CertificateClassRow.certificate_id == cert_id)
                             .values(deleted_at=None))
    engine.dispose()
    settings = settings_for(f"sqlite:///{site}", store={"url": f"sqlite:///{store}"})
    then = build_runtime(settings, clock=FixedClock(datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc)))
    try:
        refresher = SleeperRefresher(then)
        parents = then.reader.level_parents()
        return {t: len(refresher.evaluate_level(t, day, parents=parents).sleepers) for t in LEVELS}
    finally:
        then.close()


@pytest.fixture
def seeded(small_site, settings_for):
    settings = settings_for(small_site)
    migrate_store(store_url(settings))
    runtime = build_runtime(settings, clock=FixedClock(START))
    SleeperRefresher(runtime).refresh_all()       # the first refresh reconstructs the trend by itself
    yield runtime, settings
    runtime.close()


def _renew(site_url: str, user_id: int, term_id: int, day: date) -> None:
    """The learner bought a new key of the level on ``day``: a row activated then, for 30 days."""
    engine = sa.create_engine(site_url)
    keys = sa.Table("wp_memberlux_term_keys", sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        row = dict(conn.execute(sa.select(keys).where(keys.c.user_id == user_id, keys.c.term_id == term_id)
                                .limit(1)).mappings().one())
        row["id"] = conn.execute(sa.select(sa.func.max(keys.c.id))).scalar() + 1
        if "key" in row:
            row["key"] = f"renewal-{user_id}-{term_id}"
        row.update(status="used", date_registered=day.isoformat(), date_start=day.isoformat(),
                   date_end=(day + timedelta(days=30)).isoformat())
        conn.execute(keys.insert(), [row])
    engine.dispose()


def test_every_reconstructed_day_equals_the_live_rule_on_the_site_as_it_was(seeded, tmp_path, settings_for):
    runtime, settings = seeded
    site_path = sa.make_url(settings.wordpress.db_url).database
    store_path = sa.make_url(store_url(settings)).database
    # Within the window: a sleeper renews, one certificate holder got theirs, another lost theirs.
    sleeper = next(r for r in _sleepers(runtime, 7) if r[1] < TODAY - timedelta(weeks=WEEKS))
    _renew(settings.wordpress.db_url, sleeper[0], 7, TODAY - timedelta(days=5))
    certified = sorted({(t, u) for t in LEVELS for u, *_ in _certified(runtime, t)})
    assert len(certified) >= 2, "the small site needs two manual certificate holders for this test"
    with runtime.sessions.begin() as session:
        for (term_id, user_id), change in zip(certified, ("issued", "deleted"), strict=False):
            cert = session.scalar(sa.select(CertificateClassRow).where(
                CertificateClassRow.level_id == term_id, CertificateClassRow.user_id == user_id,
                CertificateClassRow.cls == "manual", CertificateClassRow.deleted_at.is_(None)).limit(1))
            if change == "issued":
                cert.date_issue, cert.create_date = TODAY - timedelta(days=12), TODAY - timedelta(days=12)
            else:
                cert.deleted_at = datetime.combine(TODAY - timedelta(days=9), datetime.min.time(), tzinfo=timezone.utc)
    TrendBackfill(runtime).backfill_all(weeks=WEEKS)
    with runtime.sessions() as session:
        stored = {(t, d): (n, rebuilt) for t, d, n, rebuilt in session.execute(
            sa.select(SleeperCount.term_id, SleeperCount.day, SleeperCount.sleepers, SleeperCount.reconstructed))}
    seen: dict[int, set[int]] = {t: set() for t in LEVELS}
    for back in range(1, WEEKS * 7):
        day = TODAY - timedelta(days=back)
        live = _as_of(runtime, day, site_path, store_path, tmp_path, settings_for)
        for term_id, count in live.items():
            assert stored[(term_id, day)] == (count, True), (term_id, day)
            seen[term_id].add(count)
    assert len(seen[7]) > 1, "level 7's count never changed in the window: the test would prove little"


def _sleepers(runtime, term_id: int) -> list[tuple]:
    return SleeperRefresher(runtime).evaluate_level(term_id, TODAY, parents=runtime.reader.level_parents()).sleepers


def _certified(runtime, term_id: int) -> list[tuple]:
    return SleeperRefresher(runtime).evaluate_level(term_id, TODAY, parents=runtime.reader.level_parents()).certified


def test_reconstructed_days_never_replace_counted_ones_and_are_replaced_themselves(seeded):
    runtime, _settings = seeded
    yesterday = TODAY - timedelta(days=1)
    with runtime.sessions.begin() as session:
        session.merge(SleeperCount(term_id=7, day=yesterday, sleepers=999, reconstructed=False))
        session.execute(sa.update(SleeperCount).where(SleeperCount.term_id == 7, SleeperCount.day == TODAY
                                                      - timedelta(days=2)).values(sleepers=555))
    report = TrendBackfill(runtime).backfill_level(7, weeks=1)
    assert (report.first_day, report.last_day, report.days_written) == (TODAY - timedelta(days=6), yesterday, 5)
    with runtime.sessions() as session:
        kept = session.get(SleeperCount, (7, yesterday))
        redone = session.get(SleeperCount, (7, TODAY - timedelta(days=2)))
    assert (kept.sleepers, kept.reconstructed) == (999, False)
    assert redone.sleepers != 555 and redone.reconstructed


def test_a_level_with_history_is_not_reconstructed_again_by_a_refresh(seeded):
    runtime, _settings = seeded
    with runtime.sessions.begin() as session:
        session.execute(sa.update(SleeperCount).where(SleeperCount.term_id == 7, SleeperCount.day < TODAY)
                        .values(sleepers=77))
    SleeperRefresher(runtime).refresh_level(7)
    with runtime.sessions() as session:
        past = set(session.scalars(sa.select(SleeperCount.sleepers).where(SleeperCount.term_id == 7,
                                                                          SleeperCount.day < TODAY)))
    assert past == {77}


@pytest.mark.parametrize("weeks", [0, 105])
def test_the_number_of_weeks_is_checked(seeded, weeks):
    runtime, _settings = seeded
    with pytest.raises(ValueError, match="weeks must be between 1 and 104"):
        TrendBackfill(runtime).backfill_level(7, weeks=weeks)


def test_a_deleted_level_has_no_sleepers_on_any_day(seeded):
    runtime, _settings = seeded
    counts = TrendBackfill(runtime).counts(4242, TODAY - timedelta(days=3), TODAY - timedelta(days=1))
    assert counts == dict.fromkeys([TODAY - timedelta(days=n) for n in (3, 2, 1)], 0)
    with pytest.raises(ValueError, match="is after the last"):
        TrendBackfill(runtime).counts(7, TODAY, TODAY - timedelta(days=1))
