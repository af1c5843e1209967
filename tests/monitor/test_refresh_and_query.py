"""The sleepers read model, the live SQL query and the domain rule agree, row for row.

Three independent paths compute the sleepers of every level:

* the read model (``mls_sleepers``), built by :class:`SleeperRefresher`;
* the set-based live query (:func:`live_sleepers`), one statement per level;
* a brute force in this file: every user's rows through ``reader.key_rows``, each (user, level) judged
  by :func:`sidecar.domain.sleepers.evaluate`.

They are compared on the seeded SQLite site, on seeded MariaDB sites (one of about 50 000 keys), and on
small random sites built by Hypothesis with the awkward rows real sites hold. The service's pages,
filters, cursors, figures and explanations are tested at the end.
"""

from __future__ import annotations

import random
import tempfile
import time as _time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.bootstrap import build_runtime
from sidecar.clock import FixedClock
from sidecar.config import settings_from_mapping
from sidecar.devstack.site import build_demo_site
from sidecar.devstack.wpschema import ZERO_DATE
from tests.sites import empty_site_schema
from sidecar.domain.access import AccessPolicy, KeyRow
from sidecar.domain.sleepers import Reason, Window, evaluate
from sidecar.memberlux.reader import ancestors_from_parents
from sidecar.monitor.certificates import CertificateClassifier
from sidecar.monitor.query import live_sleeper_ids, live_sleepers, manual_certificate_pairs
from sidecar.monitor.refresh import SleeperRefresher, search_text
from sidecar.monitor.service import (
    SORTS,
    MonitorService,
    SleeperQuery,
    UnknownLevel,
    UnknownUser,
)
from sidecar.store.monitor_models import (
    CertificateClassRow,
    SleeperCount,
    SleeperEntry,
    SleeperHint,
    SleeperRefresh,
    SleeperScan,
    WatchState,
)
from sidecar.monitor.chains import chains_of
from tests.stores import migrate_store

SEEDED_DAY = date(2026, 11, 24)  # the small_site fixture is seeded for this day


def _noon(day: date) -> FixedClock:
    return FixedClock(datetime.combine(day, time(12), tzinfo=timezone.utc))


def _runtime_for(site_url: str, store_dir: Path, day: date):
    store_url = f"sqlite:///{store_dir / 'store.sqlite'}"
    migrate_store(store_url)
    settings = settings_from_mapping({
        "wordpress": {"db_url": site_url},
        "memberlux": {"rest_base_url": "https://school.example/wp-json"},
        "store": {"url": store_url},
        "web": {"secret_key": "test-secret-key-not-for-production"},
    }, environ={})
    return build_runtime(settings, clock=_noon(day))


# --------------------------------------------------------------------------------------------------
# The three paths


def _day(value) -> date | None:
    """A calendar day from whatever the driver returned: date, datetime or text, zero dates as None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    if not text or text.startswith("0000"):
        return None
    return date.fromisoformat(text[:10])


def oracle_key_rows(runtime) -> dict[int, list[KeyRow]]:
    """Every owned key row by user, read with plain SQL and normalised here (not by the reader)."""
    p = runtime.site.prefix
    rows: dict[int, list[KeyRow]] = defaultdict(list)
    with runtime.wp_engine.connect() as conn:
        for r in conn.execute(sa.text(
                f"SELECT k.id, k.user_id, k.term_id, k.status, k.key_type, k.is_banned, k.is_unlimited, k.duration, "
                f"k.units, k.date_start, k.date_end, k.date_registered, m.activation_datetime FROM {p}memberlux_term_keys k "
                f"LEFT JOIN {p}memberlux_keys_meta m ON m.key_id = k.id "
                "WHERE k.user_id IS NOT NULL AND k.term_id IS NOT NULL ORDER BY k.id")):
            activated = r.activation_datetime
            if activated is not None and not isinstance(activated, datetime):
                text = str(activated)
                activated = None if text.startswith("0000") else datetime.fromisoformat(text)
            rows[int(r.user_id)].append(KeyRow(
                key_id=int(r.id), user_id=int(r.user_id), term_id=int(r.term_id),
                status=r.status if r.status in ("new", "used", "expired") else "new",
                key_type=r.key_type if r.key_type == "wpm_keys_basket" else "wpm_term_keys",
                is_banned=bool(r.is_banned), is_unlimited=bool(r.is_unlimited), duration=int(r.duration or 0),
                units="days" if r.units == "days" else "months", date_start=_day(r.date_start),
                date_end=_day(r.date_end), date_registered=_day(r.date_registered), activated_at=activated))
    return rows


def oracle_manual_pairs(runtime) -> set[tuple[int, int]]:
    """(user, level) holding a manual certificate, worked out here from core.md 4 with plain SQL.

    A certificate is auto only when its level issues automatically now, its issue date is its insert
    date, and a key of that user and level was activated that UTC day (keys_meta's time, else the
    registration day, else — registration path only — the start day); everything else is manual.
    """
    p = runtime.site.prefix
    if not runtime.site.has("memberlux_certificate"):
        return set()
    with runtime.wp_engine.connect() as conn:
        modes = {int(t): str(v).strip() for t, v in conn.execute(sa.text(
            f"SELECT term_id, meta_value FROM {p}termmeta WHERE meta_key = '_mblc_how_to_issue'"))}
        activations: dict[tuple[int, int], set[date]] = defaultdict(set)
        for user_id, term_id, activated, registered, start in conn.execute(sa.text(
                f"SELECT k.user_id, k.term_id, m.activation_datetime, k.date_registered, k.date_start "
                f"FROM {p}memberlux_term_keys k LEFT JOIN {p}memberlux_keys_meta m ON m.key_id = k.id "
                "WHERE k.status IN ('used', 'expired') AND k.user_id IS NOT NULL")):
            day = _day(activated) or _day(registered) or _day(start)
            if day is not None:
                activations[(int(user_id), int(term_id))].add(day)
        manual = set()
        for user_id, level_id, issued, created in conn.execute(sa.text(
                f"SELECT user_id, wpmlevel_id, date_issue, create_date FROM {p}memberlux_certificate")):
            pair = (int(user_id), int(level_id))
            issued, created = _day(issued), _day(created)
            auto = (modes.get(pair[1]) == "auto" and issued is not None and issued == created
                    and created in activations.get(pair, set()))
            if not auto:
                manual.add(pair)
    return manual


def brute_force(runtime, day: date, window: Window | None = None, *,
                manual: set[tuple[int, int]] | None = None) -> dict[tuple[int, int], object]:
    """Verdict of every (level, existing user), from each user's own rows and the domain rule.

    Independent of the code under test on every side but the rule itself: key rows and certificate
    classes are read and worked out here with plain SQL, not by the reader or the classifier.
    """
    window = window or Window()
    reader = runtime.reader
    parents = reader.level_parents()
    manual = oracle_manual_pairs(runtime) if manual is None else manual
    users_table = reader.schema.table("users")
    with runtime.wp_engine.connect() as conn:
        ids = [int(v) for v in conn.execute(sa.select(users_table.c.ID).order_by(users_table.c.ID)).scalars()]
    users = reader.users(ids)
    key_rows = oracle_key_rows(runtime)
    verdicts = {}
    for user_id in ids:
        by_level = defaultdict(list)
        for row in key_rows.get(user_id, []):
            by_level[row.term_id].append(row)
        for term_id in parents:
            ancestor_rows = [r for a in ancestors_from_parents(parents, term_id) for r in by_level.get(a, ())]
            verdicts[(term_id, user_id)] = evaluate(
                user_id, term_id, by_level.get(term_id, []), day, ancestor_rows=ancestor_rows,
                has_manual_certificate=(user_id, term_id) in manual, blocked=users[user_id].blocked,
                window=window, policy=runtime.access_policy)
    return verdicts


def brute_sleepers(verdicts, term_id: int) -> list[tuple[int, date, bool]]:
    return sorted((v.user_id, v.expired_on, v.blocked) for (t, _), v in verdicts.items()
                  if t == term_id and v.is_sleeper)


def model_sleepers(runtime, term_id: int) -> list[tuple[int, date, bool]]:
    with runtime.sessions() as session:
        entries = session.scalars(sa.select(SleeperEntry).where(SleeperEntry.term_id == term_id))
        return sorted((e.user_id, e.expired_on, e.blocked) for e in entries)


def live(runtime, term_id: int, day: date, window: Window | None = None) -> list[tuple[int, date, bool]]:
    return sorted(tuple(s) for s in live_sleepers(runtime, term_id, day, window))


def assert_three_agree(runtime, day: date) -> dict:
    verdicts = brute_force(runtime, day)
    for level in runtime.reader.levels():
        expected = brute_sleepers(verdicts, level.term_id)
        assert model_sleepers(runtime, level.term_id) == expected, f"read model differs on level {level.term_id}"
        assert live(runtime, level.term_id, day) == expected, f"live query differs on level {level.term_id}"
    return verdicts


# --------------------------------------------------------------------------------------------------
# Seeded sites


@pytest.fixture
def monitored(runtime):
    """The seeded small site, certificates classified and every level refreshed for SEEDED_DAY."""
    runtime.clock = _noon(SEEDED_DAY)
    reports = SleeperRefresher(runtime).refresh_all()
    return runtime, reports


def test_read_model_equals_rule_and_live_query_on_seeded_site(monitored):
    runtime, reports = monitored
    verdicts = assert_three_agree(runtime, SEEDED_DAY)
    reasons = {v.reason for v in verdicts.values()}
    # The seeded data exercises the interesting branches, or this test would prove little.
    assert {Reason.SLEEPER, Reason.ACTIVE, Reason.UNLIMITED, Reason.MANUAL_CERTIFICATE} <= reasons
    assert sorted(r.term_id for r in reports) == sorted(runtime.reader.level_parents())
    for report in reports:
        assert report.sleepers == len(model_sleepers(runtime, report.term_id))
        assert report.reasons.get("sleeper", 0) == report.sleepers
        assert report.users_considered == sum(report.reasons.values())
        assert report.rows_scanned >= report.users_considered


def test_refresh_records_freshness_counts_and_search_text(monitored):
    runtime, reports = monitored
    with runtime.sessions() as session:
        refreshes = {r.term_id: r for r in session.scalars(sa.select(SleeperRefresh))}
        counts = {(c.term_id, c.day): c.sleepers for c in session.scalars(sa.select(SleeperCount))}
        entry = session.scalars(sa.select(SleeperEntry).limit(1)).one()
    for report in reports:
        stored = refreshes[report.term_id]
        assert stored.evaluated_for == SEEDED_DAY
        assert stored.sleepers == report.sleepers and stored.rows_scanned == report.rows_scanned
        assert stored.reasons == report.reasons
        assert counts[(report.term_id, SEEDED_DAY)] == report.sleepers
    assert entry.search_text == search_text(entry.first_name, entry.last_name, entry.email, entry.login)
    assert entry.search_text == entry.search_text.lower()
    user = runtime.reader.user(entry.user_id)
    assert (entry.email, entry.login, entry.first_name, entry.last_name) == (
        user.email, user.login, user.first_name, user.last_name)


def test_refresh_replaces_the_level_and_skips_deleted_levels(monitored, small_site):
    runtime, _ = monitored
    term_id, (user_id, expired_on, _) = next(
        (t, rows[0]) for t in runtime.reader.level_parents() if (rows := model_sleepers(runtime, t)))
    insert = sa.text(
        "INSERT INTO wp_memberlux_term_keys (term_id, user_id, `key`, key_type, status, sent, is_banned, "
        "duration, units, date_start, date_end, date_registered, is_unlimited) VALUES "
        "(:t, :u, :code, 'wpm_term_keys', 'used', 0, 0, 1, 'months', :s, :e, :s, 0)")
    writer = sa.create_engine(small_site)
    with writer.begin() as conn:
        # The learner renews: a new row running past today.
        conn.execute(insert, {"t": term_id, "u": user_id, "code": "renewal", "s": "2026-11-20", "e": "2026-12-20"})
        # A level deleted in WordPress leaves its rows behind (an expired one here): nobody sleeps in it.
        conn.execute(insert, {"t": 4243, "u": user_id, "code": "orphan", "s": "2026-01-01", "e": "2026-02-01"})
    writer.dispose()
    again = SleeperRefresher(runtime).refresh_level(term_id)
    assert user_id not in {u for u, _, _ in model_sleepers(runtime, term_id)}
    assert again.sleepers == len(model_sleepers(runtime, term_id))
    assert user_id not in {u for u, _, _ in live(runtime, term_id, SEEDED_DAY)}
    assert expired_on <= SEEDED_DAY

    report = SleeperRefresher(runtime).refresh_level(4243)
    assert report.skipped and report.sleepers == 0
    assert live_sleeper_ids(runtime, 4243, SEEDED_DAY) == []
    assert model_sleepers(runtime, 4243) == []


def test_refresh_all_drops_rows_of_levels_deleted_since(monitored):
    runtime, _ = monitored
    now = runtime.clock.now()
    with runtime.sessions.begin() as session:
        session.add(SleeperEntry(term_id=4242, user_id=5, expired_on=SEEDED_DAY, refreshed_at=now))
        session.add(SleeperRefresh(term_id=4242, evaluated_for=SEEDED_DAY, refreshed_at=now, seconds=0.1,
                                   rows_scanned=1, users_considered=1, sleepers=1, reasons={}))
    SleeperRefresher(runtime).refresh_all(sync_certificates=False)
    assert model_sleepers(runtime, 4242) == []
    assert 4242 not in MonitorService(runtime).freshness()


def test_live_query_window(monitored):
    runtime, _ = monitored
    window = Window(SEEDED_DAY - timedelta(days=400), SEEDED_DAY + timedelta(days=30))  # end clamped to D
    verdicts = brute_force(runtime, SEEDED_DAY, window)
    for term_id in runtime.reader.level_parents():
        expected = brute_sleepers(verdicts, term_id)
        assert live(runtime, term_id, SEEDED_DAY, window) == expected
        assert [u for u, _ in live_sleeper_ids(runtime, term_id, SEEDED_DAY, window)] == [u for u, _, _ in expected]


def _mariadb_site(mariadb_database: str, tmp_path: Path, *, users: int, levels: int, seed: int):
    build_demo_site(mariadb_database, users=users, levels=levels, seed=seed, today=SEEDED_DAY, fresh=True)
    return _runtime_for(mariadb_database, tmp_path, SEEDED_DAY)


@pytest.mark.mariadb
def test_read_model_equals_rule_and_live_query_on_mariadb(mariadb_database, tmp_path):
    runtime = _mariadb_site(mariadb_database, tmp_path, users=400, levels=10, seed=11)
    try:
        assert any(runtime.reader.ancestors(t) for t in runtime.reader.level_parents())  # a parent/child pair
        SleeperRefresher(runtime).refresh_all()
        assert_three_agree(runtime, SEEDED_DAY)
    finally:
        runtime.close()


@pytest.mark.slow
@pytest.mark.mariadb
def test_fifty_thousand_keys_on_mariadb_row_for_row(mariadb_database, tmp_path, capsys):
    summary = build_demo_site(mariadb_database, users=10_000, levels=10, seed=11, today=SEEDED_DAY, fresh=True)
    assert summary.keys >= 50_000
    runtime = _runtime_for(mariadb_database, tmp_path, SEEDED_DAY)
    try:
        reports = SleeperRefresher(runtime).refresh_all()
        started = _time.perf_counter()
        live_results = {r.term_id: live(runtime, r.term_id, SEEDED_DAY) for r in reports}
        live_seconds = _time.perf_counter() - started
        verdicts = brute_force(runtime, SEEDED_DAY)
        reasons = {v.reason for v in verdicts.values()}
        assert {Reason.SLEEPER, Reason.ANCESTOR_ACTIVE, Reason.MANUAL_CERTIFICATE, Reason.RENEWED} <= reasons
        for report in reports:
            expected = brute_sleepers(verdicts, report.term_id)
            assert model_sleepers(runtime, report.term_id) == expected
            assert live_results[report.term_id] == expected
        with capsys.disabled():
            print(f"\n{summary.keys} keys, {summary.activated_keys} activated; refresh per level "
                  f"(rows scanned / seconds): "
                  + ", ".join(f"{r.term_id}: {r.rows_scanned}/{r.seconds:.2f}s" for r in reports)
                  + f"; live query for all levels {live_seconds:.2f}s")
    finally:
        runtime.close()


# --------------------------------------------------------------------------------------------------
# Random small sites (Hypothesis, SQLite)

DAY = date(2026, 6, 15)
PARENT, CHILD, OTHER, GONE = 10, 11, 12, 20     # GONE: rows left behind by a deleted level
EXISTING_USERS = (1, 2, 3, 4, 5)
ORPHAN_USER = 6


def _date_text(draw, base: date, low: int, high: int) -> str:
    if draw(st.integers(0, 9)) == 0:
        return ZERO_DATE
    return (base + timedelta(days=draw(st.integers(low, high)))).isoformat()


@st.composite
def random_sites(draw):
    keys = []
    for _ in range(draw(st.integers(0, 24))):
        start = _date_text(draw, DAY, -45, 6)
        if start == ZERO_DATE:
            end = draw(st.sampled_from([ZERO_DATE, (DAY + timedelta(days=draw(st.integers(-20, 10)))).isoformat()]))
        else:
            # Mostly ends close to D (X = D and X = D + 1 are the boundaries), some zero-length or inverted.
            end = _date_text(draw, date.fromisoformat(start), -2, 40)
        keys.append({
            "user_id": draw(st.sampled_from(EXISTING_USERS + (ORPHAN_USER,))),
            "term_id": draw(st.sampled_from([PARENT, CHILD, CHILD, OTHER, GONE])),
            "status": draw(st.sampled_from(["used", "used", "expired", "expired", "new", None])),
            "is_banned": draw(st.sampled_from([0, 0, 0, 1, None])),
            "key_type": draw(st.sampled_from(["wpm_term_keys"] * 4 + ["wpm_keys_basket", None])),
            "is_unlimited": draw(st.sampled_from([0] * 6 + [1])),
            "date_start": start, "date_end": end,
            "date_registered": draw(st.sampled_from([None, start if start != ZERO_DATE else None])),
            "meta": draw(st.booleans()),
        })
    certificates = [
        {"user_id": draw(st.sampled_from(EXISTING_USERS + (ORPHAN_USER,))),
         "level": draw(st.sampled_from([PARENT, CHILD, OTHER])),
         "create": draw(st.sampled_from([k["date_start"] for k in keys if k["date_start"] != ZERO_DATE] or
                                        [DAY.isoformat()])),
         "shift": draw(st.sampled_from([0, 0, -3]))}
        for _ in range(draw(st.integers(0, 4)))
    ]
    modes = {level: draw(st.sampled_from([None, "auto", "employee"])) for level in (PARENT, CHILD, OTHER)}
    blocked = draw(st.sets(st.sampled_from(EXISTING_USERS), max_size=2))
    window = draw(st.one_of(st.none(), st.tuples(st.integers(-40, 0), st.integers(-10, 10))))
    include_basket = draw(st.booleans())
    return keys, certificates, modes, blocked, window, include_basket


class RandomSite:
    """One SQLite site and store reused by every example: each example wipes and refills them."""

    WP_TABLES = ("users", "usermeta", "terms", "term_taxonomy", "termmeta", "memberlux_term_keys",
                 "memberlux_keys_meta", "memberlux_certificate")

    def __init__(self, directory: Path) -> None:
        url = f"sqlite:///{directory / 'wordpress.sqlite'}"
        self.writer = sa.create_engine(url)
        self.md = empty_site_schema(self.writer)
        self.runtime = _runtime_for(url, directory, DAY)

    def t(self, short: str) -> sa.Table:
        return self.md.tables["wp_" + short]

    def load(self, keys, certificates, modes, blocked) -> None:
        # Each table's rows go in one executemany: a statement per row made the loading, not the code
        # under test, a large share of every example.
        users, usermeta, terms, taxonomy, termmeta, key_rows, key_meta, certificate_rows = ([] for _ in range(8))
        for user_id in EXISTING_USERS:
            users.append({"ID": user_id, "user_login": f"learner{user_id}", "user_email": f"Learner{user_id}@Example.org",
                          "display_name": f"Learner {user_id}"})
            usermeta += [{"user_id": user_id, "meta_key": "first_name", "meta_value": f"Имя{user_id}"},
                         {"user_id": user_id, "meta_key": "last_name", "meta_value": f"Фамилия{user_id}"}]
            if user_id in blocked:
                usermeta.append({"user_id": user_id, "meta_key": "wpm_status", "meta_value": "inactive"})
        for term_id, parent in ((PARENT, 0), (CHILD, PARENT), (OTHER, 0)):
            terms.append({"term_id": term_id, "name": f"Level {term_id}", "slug": f"level-{term_id}"})
            taxonomy.append({"term_taxonomy_id": term_id, "term_id": term_id, "taxonomy": "wpm-levels",
                             "description": "", "parent": parent})
            if modes[term_id] is not None:
                termmeta += [{"term_id": term_id, "meta_key": "_mblc_has_certificate", "meta_value": "yes"},
                             {"term_id": term_id, "meta_key": "_mblc_how_to_issue", "meta_value": modes[term_id]}]
        for key_id, key in enumerate(keys, start=1):
            key_rows.append({
                "id": key_id, "term_id": key["term_id"], "user_id": key["user_id"], "key": f"code-{key_id}",
                "key_type": key["key_type"], "status": key["status"], "sent": 0, "is_banned": key["is_banned"],
                "duration": 1, "units": "months", "date_start": key["date_start"], "date_end": key["date_end"],
                "date_registered": key["date_registered"], "is_unlimited": key["is_unlimited"]})
            if key["meta"] and key["date_start"] != ZERO_DATE:
                key_meta.append({"key_id": key_id, "activation_datetime": f"{key['date_start']} 10:00:00",
                                 "source": "purchase"})
        for cert_id, cert in enumerate(certificates, start=1):
            created = date.fromisoformat(cert["create"])
            certificate_rows.append({
                "certificate_id": cert_id, "user_id": cert["user_id"], "wpmlevel_id": cert["level"],
                "certificate_name": "Course", "certificate_template_id": 1,
                "date_issue": (created + timedelta(days=cert["shift"])).isoformat(), "series": "S",
                "number": f"{cert['user_id']:05d}", "responsible_person": 0, "create_date": created.isoformat()})
        rows = {"users": users, "usermeta": usermeta, "terms": terms, "term_taxonomy": taxonomy, "termmeta": termmeta,
                "memberlux_term_keys": key_rows, "memberlux_keys_meta": key_meta, "memberlux_certificate": certificate_rows}
        with self.writer.begin() as conn:
            for short in self.WP_TABLES:
                conn.execute(self.t(short).delete())
            for short in self.WP_TABLES:
                if rows[short]:
                    conn.execute(self.t(short).insert(), rows[short])
        with self.runtime.sessions.begin() as session:
            for model in (SleeperEntry, SleeperRefresh, SleeperCount, CertificateClassRow, WatchState, SleeperScan,
                          SleeperHint):
                session.execute(sa.delete(model))


@contextmanager
def open_random_site() -> Iterator[RandomSite]:
    """A RandomSite in a temporary directory, closed and removed afterwards."""
    with tempfile.TemporaryDirectory() as directory:
        site = RandomSite(Path(directory))
        try:
            yield site
        finally:
            site.runtime.close()
            site.writer.dispose()


@pytest.fixture(scope="module")
def random_site():
    with open_random_site() as site:
        yield site


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=random_sites())
def test_random_sites_read_model_rule_and_live_query_agree(random_site, data):
    keys, certificates, modes, blocked, window_offsets, include_basket = data
    site = random_site
    runtime = site.runtime
    runtime.access_policy = AccessPolicy(include_basket=include_basket)
    site.load(keys, certificates, modes, blocked)

    reports = SleeperRefresher(runtime).refresh_all()
    assert sorted(r.term_id for r in reports) == [PARENT, CHILD, OTHER]
    assert_three_agree(runtime, DAY)
    assert live_sleeper_ids(runtime, GONE, DAY) == []
    for term_id in (PARENT, CHILD, OTHER):
        assert all(user_id != ORPHAN_USER for user_id, _, _ in model_sleepers(runtime, term_id))

    if window_offsets is not None:
        window = Window(DAY + timedelta(days=window_offsets[0]), DAY + timedelta(days=window_offsets[1]))
        verdicts = brute_force(runtime, DAY, window)
        service = MonitorService(runtime)
        for term_id in (PARENT, CHILD, OTHER):
            expected = brute_sleepers(verdicts, term_id)
            assert live(runtime, term_id, DAY, window) == expected
            shown = service.iterate(SleeperQuery(levels=(term_id,), expired_from=window.start,
                                                 expired_to=window.end), chunk=2)
            assert sorted((r.user_id, r.expired_on, r.blocked) for r in shown) == expected


# --------------------------------------------------------------------------------------------------
# The service: pages, cursors, filters


NAMES = ["Анна", "anna", "Zoe", "Émile", "", "Bob", "Иванов", "O'Neil", "a_b", "100%"]


@pytest.fixture
def catalogue(runtime):
    """A read model with many ties (same expiry, same names, same e-mails) on the seeded site's levels."""
    runtime.clock = _noon(SEEDED_DAY)
    levels = sorted(runtime.reader.level_parents())
    rng = random.Random(5)
    now = runtime.clock.now()
    entries = []
    for user_id in range(1, 61):
        for term_id in rng.sample(levels, rng.randint(1, len(levels))):
            first, last = rng.choice(NAMES), rng.choice(NAMES)
            email = f"{rng.choice(['x', 'y', 'Z'])}@example.org"
            entries.append(SleeperEntry(
                term_id=term_id, user_id=user_id,
                expired_on=SEEDED_DAY - timedelta(days=rng.choice([0, 1, 1, 5, 5, 5, 30])),
                last_grant=None, blocked=user_id % 7 == 0, email=email, login=f"login{user_id}",
                first_name=first, last_name=last, search_text=search_text(first, last, email, f"login{user_id}"),
                refreshed_at=now))
    with runtime.sessions.begin() as session:
        session.add_all(entries)
    return runtime, entries


def _expected_order(entries, sort: str, descending: bool, ranks: dict[int, int]):
    keys = {
        "expired_on": lambda e: (e.expired_on, e.term_id, e.user_id),   # ties: level, then user (the index)
        "days_since": lambda e: (e.expired_on, e.term_id, e.user_id),
        "name": lambda e: (e.last_name, e.first_name, e.user_id, e.term_id),
        "email": lambda e: (e.email, e.user_id, e.term_id),
        "level": lambda e: (ranks[e.term_id], e.expired_on, e.user_id, e.term_id),
    }
    reverse = (not descending) if sort == "days_since" else descending
    return [(e.user_id, e.term_id) for e in sorted(entries, key=keys[sort], reverse=reverse)]


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("sort", SORTS)
def test_pages_are_complete_stable_and_ordered(catalogue, sort, descending):
    runtime, entries = catalogue
    service = MonitorService(runtime)
    levels = runtime.reader.levels()
    ordered = sorted(levels, key=lambda lv: (lv.name.casefold(), lv.term_id))
    ranks = {lv.term_id: i for i, lv in enumerate(ordered)}
    seen, cursor, pages = [], None, 0
    while True:
        page = service.page(SleeperQuery(sort=sort, descending=descending, after=cursor, limit=7))
        assert page.total == len(entries)
        seen.extend((r.user_id, r.term_id) for r in page.rows)
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == _expected_order(entries, sort, descending, ranks)
    assert len(set(seen)) == len(entries) and pages == -(-len(entries) // 7)
    streamed = [(r.user_id, r.term_id) for r in service.iterate(SleeperQuery(sort=sort, descending=descending),
                                                                chunk=9)]
    assert streamed == seen


def test_rows_carry_derived_fields(catalogue):
    runtime, _ = catalogue
    service = MonitorService(runtime)
    names = {lv.term_id: lv.name for lv in runtime.reader.levels()}
    for row in service.iterate(SleeperQuery()):
        assert row.days_since == (SEEDED_DAY - row.expired_on).days
        assert row.last_access_day == row.expired_on - timedelta(days=1)
        assert row.level_name == names[row.term_id]
        assert row.reminders_sent == 0
        assert row.blocked == (row.user_id % 7 == 0)


def test_filters_levels_window_and_search(catalogue):
    runtime, entries = catalogue
    service = MonitorService(runtime)
    level = entries[0].term_id

    def ids(**kwargs):
        return sorted((r.user_id, r.term_id) for r in service.iterate(SleeperQuery(**kwargs)))

    assert ids(levels=(level,)) == sorted((e.user_id, e.term_id) for e in entries if e.term_id == level)
    window = ids(expired_from=SEEDED_DAY - timedelta(days=5), expired_to=SEEDED_DAY - timedelta(days=1))
    assert window == sorted((e.user_id, e.term_id) for e in entries
                            if SEEDED_DAY - timedelta(days=5) <= e.expired_on <= SEEDED_DAY - timedelta(days=1))
    # A window reaching into the future is clamped to today, never an error.
    assert ids(expired_from=SEEDED_DAY, expired_to=SEEDED_DAY + timedelta(days=90)) == sorted(
        (e.user_id, e.term_id) for e in entries if e.expired_on == SEEDED_DAY)
    # Search is case-insensitive (Cyrillic too) and treats LIKE wildcards literally.
    assert ids(search="ИВАНОВ") == sorted((e.user_id, e.term_id) for e in entries
                                         if "иванов" in e.search_text)
    assert ids(search="a_b") == sorted((e.user_id, e.term_id) for e in entries if "a_b" in e.search_text)
    assert ids(search="100%") == sorted((e.user_id, e.term_id) for e in entries if "100%" in e.search_text)
    assert ids(search="%") == sorted((e.user_id, e.term_id) for e in entries if "%" in e.search_text)
    assert ids(search="login7 z@example") == sorted((e.user_id, e.term_id) for e in entries
                                                    if "login7" in e.search_text and "z@example" in e.search_text)
    page = service.page(SleeperQuery(levels=(level,), search="o'neil", limit=3))
    assert page.total == len([e for e in entries if e.term_id == level and "o'neil" in e.search_text])


def test_bad_cursors_and_arguments_are_rejected_clearly(catalogue):
    runtime, _ = catalogue
    service = MonitorService(runtime)
    first = service.page(SleeperQuery(limit=5))
    assert first.next_cursor
    for bad in ("not-base64!!", "eyJ2IjoxfQ", "", "x" * 3000):
        with pytest.raises(ValueError, match="invalid cursor"):
            service.page(SleeperQuery(after=bad or "=", limit=5))
    with pytest.raises(ValueError, match="another order"):
        service.page(SleeperQuery(sort="email", after=first.next_cursor, limit=5))
    with pytest.raises(ValueError, match="another order"):
        service.page(SleeperQuery(descending=True, after=first.next_cursor, limit=5))
    with pytest.raises(ValueError, match="unknown sort"):
        service.page(SleeperQuery(sort="user_pass"))
    with pytest.raises(ValueError, match="limit"):
        service.page(SleeperQuery(limit=0))


def test_reminders_sent_counts_the_letters_of_the_current_chain(catalogue):
    from sidecar.store.reminder_models import Reminder

    runtime, entries = catalogue
    first, second = entries[0], entries[1]
    chains = [(e.user_id, e.term_id, e.expired_on) for e in entries[:3]]
    with runtime.sessions() as session:
        assert {k: c.sent for k, c in chains_of(runtime, session, entries[:3], SEEDED_DAY, with_status=False).items()} \
            == dict.fromkeys(chains, 0)
    now = datetime(2026, 11, 24, 12, tzinfo=timezone.utc)

    def letter(entry, expired_on, step, state):
        return Reminder(user_id=entry.user_id, term_id=entry.term_id, expired_on=expired_on, step=step, state=state,
                        reason="", due_on=expired_on, planned_at=now, updated_at=now, attempts=1, to_address="",
                        subject="", last_error="")

    with runtime.sessions.begin() as session:
        session.add_all([
            letter(first, first.expired_on, 1, "sent"), letter(first, first.expired_on, 2, "sent"),
            letter(first, first.expired_on, 3, "failed"),           # not sent
            letter(first, first.expired_on, 4, "sent"),             # the admin digest is not a reminder
            letter(first, first.expired_on - timedelta(days=90), 1, "sent"),   # an earlier chain
            letter(second, second.expired_on, 1, "skipped"),
        ])
    with runtime.sessions() as session:
        counts = {k: c.sent for k, c in chains_of(runtime, session, entries[:3], SEEDED_DAY, with_status=False).items()}
    assert counts[chains[0]] == 2 and counts[chains[1]] == 0
    row = next(r for r in MonitorService(runtime).iterate(SleeperQuery())
               if (r.user_id, r.term_id) == (first.user_id, first.term_id))
    assert row.reminders_sent == 2


# --------------------------------------------------------------------------------------------------
# The service: figures and explanations (seeded site, real refresh)


def test_counts_trend_and_freshness(monitored):
    runtime, reports = monitored
    service = MonitorService(runtime)
    counts = service.counts_per_level()
    assert counts == {r.term_id: r.sleepers for r in reports}
    trend = service.trend(weeks=4)
    # The first refresh counted today and reconstructed the days before it from key dates.
    past = [SEEDED_DAY - timedelta(days=n) for n in range(27, 0, -1)]
    for report in reports:
        points = trend[report.term_id]
        assert points[-1] == (SEEDED_DAY, report.sleepers, False)
        assert [p.day for p in points[:-1]] == past and all(p.reconstructed for p in points[:-1])
    fresh = service.freshness()
    assert set(fresh) == set(counts)
    for report in reports:
        info = fresh[report.term_id]
        assert info.evaluated_for == SEEDED_DAY and not info.stale
        assert info.refreshed_at.tzinfo is not None and info.seconds >= 0
        assert info.sleepers == report.sleepers
    runtime.clock = _noon(SEEDED_DAY + timedelta(days=1))
    assert all(info.stale for info in service.freshness().values())


def _pick(verdicts, reason: Reason):
    return next((t, u) for (t, u), v in sorted(verdicts.items()) if v.reason is reason)


def test_explain_a_sleeper_an_active_user_and_a_manual_certificate(monitored):
    runtime, _ = monitored
    service = MonitorService(runtime)
    verdicts = brute_force(runtime, SEEDED_DAY)

    term_id, user_id = _pick(verdicts, Reason.SLEEPER)
    e = service.explain(user_id, term_id)
    assert e.is_sleeper and e.reason == "sleeper" and e.day == SEEDED_DAY
    assert e.verdict == verdicts[(term_id, user_id)]
    assert e.read_model.listed and e.read_model.expired_on == e.verdict.expired_on
    assert e.keys and all(k.term_id == term_id for k in e.keys)
    assert max(k.date_end for k in e.keys if k.counts) == e.verdict.expired_on
    assert not any(k.active_on_day for k in e.keys)
    assert e.verdict.expired_on.isoformat() in e.summary
    # The same user found by e-mail, typed in another case.
    assert service.explain(e.user.email.upper(), term_id).verdict == e.verdict
    assert service.explain(str(user_id), term_id).verdict == e.verdict

    term_id, user_id = _pick(verdicts, Reason.ACTIVE)
    e = service.explain(user_id, term_id)
    assert e.reason == "active" and not e.read_model.listed
    assert any(k.active_on_day for k in e.keys)
    assert e.summary.startswith("Active")

    term_id, user_id = _pick(verdicts, Reason.MANUAL_CERTIFICATE)
    e = service.explain(user_id, term_id)
    assert e.reason == "manual_certificate" and e.has_manual_certificate and not e.read_model.listed
    assert any(c.cls == "manual" and not c.deleted for c in e.certificates)
    assert all(c.level_id == term_id for c in e.certificates)
    assert "manual certificate" in e.summary

    # A key the rule ignores says why.
    with runtime.wp_engine.connect() as conn:
        banned_user, banned_level = conn.execute(sa.text(
            "SELECT user_id, term_id FROM wp_memberlux_term_keys WHERE is_banned = 1 AND user_id IN "
            "(SELECT ID FROM wp_users) AND term_id IN (SELECT term_id FROM wp_term_taxonomy "
            "WHERE taxonomy = 'wpm-levels') LIMIT 1")).one()
    e = service.explain(int(banned_user), int(banned_level))
    assert any(k.banned and not k.counts and "banned" in k.note for k in e.keys)


def test_explain_unknown_user_or_level_is_a_clear_error(monitored):
    runtime, _ = monitored
    service = MonitorService(runtime)
    level = next(iter(runtime.reader.level_parents()))
    with pytest.raises(UnknownUser, match="no WordPress user with id 987654"):
        service.explain(987654, level)
    with pytest.raises(UnknownUser, match="no WordPress user with e-mail nobody@example.invalid"):
        service.explain("nobody@example.invalid", level)
    with pytest.raises(UnknownUser, match="neither a user id nor an e-mail"):
        service.explain("somebody", level)
    with pytest.raises(UnknownLevel, match="no access level with id 987654"):
        service.explain(4, 987654)
    assert issubclass(UnknownUser, LookupError) and issubclass(UnknownLevel, LookupError)


def test_classifier_is_the_source_of_manual_certificates(monitored):
    runtime, _ = monitored
    classifier = CertificateClassifier(runtime)
    assert manual_certificate_pairs(runtime) == classifier.manual_pairs()
    assert classifier.manual_pairs()
