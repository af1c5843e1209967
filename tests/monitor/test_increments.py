"""The change scan keeps the read model equal to a full rebuild, whatever changes on the site.

A random small site is built and rebuilt; then random changes of every kind MemberLux (or an
administrator) makes are written to its tables — new keys, renewals stacked on one another, keys
activated, extended, flipped between ``used`` and ``expired`` or banned *in place*, keys and users
deleted, names, e-mails and block flags edited, certificates issued, the UTC day rolling over — and after
each batch the scan runs. The model must then hold exactly what a full pass over the site gives (every
stored column), its counts must match, and the independent brute force (plain SQL + the rule) must agree
on who sleeps. At the end a reconciling rebuild must find nothing the scans missed.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, time, timedelta, timezone

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.clock import FixedClock
from sidecar.domain.access import AccessPolicy
from sidecar.monitor.certificates import CertificateClassifier
from sidecar.monitor.increments import SleeperIncrements, hint_users
from sidecar.monitor.model_store import stored_columns, stored_tuple
from sidecar.monitor.site_pass import SitePass, UserSelection
from sidecar.store.monitor_models import SleeperEntry, SleeperHint, SleeperRefresh, SleeperScan
from tests.monitor.test_refresh_and_query import (
    CHILD,
    DAY,
    EXISTING_USERS,
    OTHER,
    PARENT,
    RandomSite,
    brute_force,
    brute_sleepers,
    open_random_site,
    random_sites,
)

NEVER = timedelta(days=3650)  # no reconciling rebuild inside a sequence
LEVELS = (PARENT, CHILD, OTHER)
USERS = EXISTING_USERS + (6,)


def _noon(day: date) -> FixedClock:
    return FixedClock(datetime.combine(day, time(12), tzinfo=timezone.utc))


@pytest.fixture(scope="module")
def site():
    with open_random_site() as site:
        yield site


# --------------------------------------------------------------------------------------------------
# Changes, as MemberLux or an administrator would write them (one statement each)

change = st.one_of(
    st.tuples(st.just("new_key"), st.sampled_from(USERS), st.sampled_from(LEVELS), st.integers(-40, 5),
              st.integers(0, 45), st.sampled_from(["used", "expired", "new"]), st.sampled_from([0, 0, 0, 1])),
    st.tuples(st.just("stacked_renewal"), st.integers(0, 40), st.integers(1, 40)),
    st.tuples(st.just("flip_status"), st.integers(0, 40)),
    st.tuples(st.just("extend_in_place"), st.integers(0, 40), st.integers(-20, 40)),
    st.tuples(st.just("ban_flip"), st.integers(0, 40)),
    st.tuples(st.just("delete_key"), st.integers(0, 40)),
    st.tuples(st.just("activation_time"), st.integers(0, 40), st.integers(-5, 5)),
    st.tuples(st.just("block_flip"), st.sampled_from(EXISTING_USERS)),
    st.tuples(st.just("rename"), st.sampled_from(EXISTING_USERS), st.sampled_from(["Ann", "Борис", "", "O'Neil"])),
    st.tuples(st.just("new_email"), st.sampled_from(EXISTING_USERS), st.integers(0, 99)),
    st.tuples(st.just("delete_user"), st.sampled_from(EXISTING_USERS)),
    st.tuples(st.just("certificate"), st.sampled_from(USERS), st.sampled_from(LEVELS)),
    st.tuples(st.just("next_day"), st.integers(1, 3)),
    st.tuples(st.just("hint"), st.sampled_from(USERS)),
)


class Writer:
    """Applies one change to the site's tables, statement by statement, as the site would."""

    def __init__(self, site: RandomSite) -> None:
        self.site = site
        self.t = site.t

    def key_ids(self, conn) -> list[int]:
        return [int(i) for i in conn.execute(sa.select(self.t("memberlux_term_keys").c.id).order_by("id")).scalars()]

    def pick(self, conn, index: int) -> int | None:
        ids = self.key_ids(conn)
        return ids[index % len(ids)] if ids else None

    def apply(self, step: tuple, day: date) -> date:
        keys, meta = self.t("memberlux_term_keys"), self.t("memberlux_keys_meta")
        users, usermeta = self.t("users"), self.t("usermeta")
        kind, *args = step
        with self.site.writer.begin() as conn:
            # A deleted key may leave its keys_meta row behind: new ids start past both.
            next_id = max(conn.execute(sa.select(sa.func.max(keys.c.id))).scalar() or 0,
                          conn.execute(sa.select(sa.func.max(meta.c.key_id))).scalar() or 0) + 1
            if kind == "new_key":
                user_id, term_id, start, length, status, unlimited = args
                first = day + timedelta(days=start)
                conn.execute(keys.insert().values(
                    id=next_id, term_id=term_id, user_id=user_id, key=f"k{next_id}", key_type="wpm_term_keys",
                    status=status, sent=0, is_banned=0, duration=length, units="days",
                    date_start=first.isoformat(), date_end=(first + timedelta(days=length)).isoformat(),
                    date_registered=first.isoformat(), is_unlimited=unlimited))
                if status != "new":
                    conn.execute(meta.insert().values(key_id=next_id, activation_datetime=f"{first} 09:00:00",
                                                      source="purchase"))
            elif kind == "stacked_renewal":
                # Bought before the end: the new row starts where the old one ends (core.md 3.4).
                key_id = self.pick(conn, args[0])
                if key_id is None:
                    return day
                old = conn.execute(sa.select(keys).where(keys.c.id == key_id)).one()
                start = old.date_end if old.date_end and not str(old.date_end).startswith("0000") else day.isoformat()
                first = date.fromisoformat(str(start)[:10])
                conn.execute(keys.insert().values(
                    id=next_id, term_id=old.term_id, user_id=old.user_id, key=f"k{next_id}", key_type="wpm_term_keys",
                    status="used", sent=0, is_banned=0, duration=args[1], units="days", date_start=first.isoformat(),
                    date_end=(first + timedelta(days=args[1])).isoformat(), date_registered=day.isoformat(),
                    is_unlimited=0))
            elif kind == "flip_status":
                key_id = self.pick(conn, args[0])
                if key_id is not None:
                    status = conn.execute(sa.select(keys.c.status).where(keys.c.id == key_id)).scalar()
                    flipped = {"used": "expired", "expired": "used", "new": "used"}.get(status, "used")
                    conn.execute(keys.update().where(keys.c.id == key_id).values(status=flipped))
            elif kind == "extend_in_place":
                key_id = self.pick(conn, args[0])
                if key_id is not None:
                    end = conn.execute(sa.select(keys.c.date_end).where(keys.c.id == key_id)).scalar()
                    base = date.fromisoformat(str(end)[:10]) if end and not str(end).startswith("0000") else day
                    conn.execute(keys.update().where(keys.c.id == key_id)
                                 .values(date_end=(base + timedelta(days=args[1])).isoformat()))
            elif kind == "ban_flip":
                key_id = self.pick(conn, args[0])
                if key_id is not None:
                    banned = conn.execute(sa.select(keys.c.is_banned).where(keys.c.id == key_id)).scalar()
                    conn.execute(keys.update().where(keys.c.id == key_id).values(is_banned=0 if banned else 1))
            elif kind == "delete_key":
                key_id = self.pick(conn, args[0])
                if key_id is not None:
                    conn.execute(keys.delete().where(keys.c.id == key_id))
            elif kind == "activation_time":
                key_id = self.pick(conn, args[0])
                if key_id is not None:
                    moment = datetime.combine(day + timedelta(days=args[1]), time(8))
                    conn.execute(meta.delete().where(meta.c.key_id == key_id))
                    conn.execute(meta.insert().values(key_id=key_id, activation_datetime=moment.isoformat(" "),
                                                      source="admin"))
            elif kind == "block_flip":
                user_id = args[0]
                row = conn.execute(sa.select(usermeta.c.umeta_id).where(
                    usermeta.c.user_id == user_id, usermeta.c.meta_key == "wpm_status")).first()
                if row is None:
                    conn.execute(usermeta.insert().values(user_id=user_id, meta_key="wpm_status", meta_value="inactive"))
                else:
                    conn.execute(usermeta.delete().where(usermeta.c.umeta_id == row.umeta_id))
            elif kind == "rename":
                conn.execute(usermeta.update().where(usermeta.c.user_id == args[0], usermeta.c.meta_key == "first_name")
                             .values(meta_value=args[1]))
            elif kind == "new_email":
                conn.execute(users.update().where(users.c.ID == args[0]).values(user_email=f"new{args[1]}@example.org"))
            elif kind == "delete_user":
                conn.execute(users.delete().where(users.c.ID == args[0]))
                conn.execute(usermeta.delete().where(usermeta.c.user_id == args[0]))
            elif kind == "certificate":
                certificates = self.t("memberlux_certificate")
                next_cert = (conn.execute(sa.select(sa.func.max(certificates.c.certificate_id))).scalar() or 0) + 1
                conn.execute(certificates.insert().values(
                    certificate_id=next_cert, user_id=args[0], wpmlevel_id=args[1], certificate_name="Course",
                    certificate_template_id=1, date_issue=(day - timedelta(days=1)).isoformat(), series="S",
                    number=f"{next_cert:05d}", responsible_person=1, create_date=day.isoformat()))
            elif kind == "next_day":
                return day + timedelta(days=args[0])
            elif kind == "hint":
                hint_users(self.site.runtime, [args[0]])
        return day


# --------------------------------------------------------------------------------------------------
# What the model must equal


def model_rows(runtime) -> dict[tuple[int, int], tuple]:
    entries = SleeperEntry.__table__
    with runtime.sessions() as session:
        return {(int(row[0]), int(row[1])): tuple(row[1:])
                for row in session.execute(sa.select(entries.c.term_id, *stored_columns(entries)))}


def full_pass_rows(runtime, day: date) -> dict[tuple[int, int], tuple]:
    manual = CertificateClassifier(runtime).manual_pairs()
    tallies = SitePass(runtime).run(day, runtime.reader.level_parents(), UserSelection(everybody=True), manual)
    return {(term_id, s[0]): stored_tuple(s) for term_id, tally in tallies.items() for s in tally.sleepers}


def assert_model_is_a_full_rebuild(runtime, day: date) -> None:
    expected = full_pass_rows(runtime, day)
    assert model_rows(runtime) == expected
    with runtime.sessions() as session:
        refreshes = {r.term_id: r for r in session.scalars(sa.select(SleeperRefresh))}
    counts = Counter(term_id for term_id, _ in expected)
    assert {t: r.sleepers for t, r in refreshes.items()} == {t: counts.get(t, 0) for t in runtime.reader.level_parents()}
    assert {r.evaluated_for for r in refreshes.values()} == {day}


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=random_sites(), steps=st.lists(st.lists(change, min_size=1, max_size=4), min_size=1, max_size=6))
def test_increments_equal_a_full_rebuild_after_random_changes(site, data, steps):
    keys, certificates, modes, blocked, _window, include_basket = data
    runtime = site.runtime
    runtime.access_policy = AccessPolicy(include_basket=include_basket)
    site.load(keys, certificates, modes, blocked)
    day = DAY
    runtime.clock = _noon(day)
    increments = SleeperIncrements(runtime)
    assert increments.run(NEVER).kind == "rebuild"
    writer = Writer(site)

    for batch in steps:
        for step in batch:
            day = writer.apply(step, day)
        runtime.clock = _noon(day)
        outcome = increments.run(NEVER)
        assert outcome.kind in ("scan", "idle")
        assert_model_is_a_full_rebuild(runtime, day)
        with runtime.sessions() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(SleeperHint)) == 0

    # The brute force (key rows and users read with plain SQL, the rule applied per user) agrees on who
    # sleeps. Certificates as classified: a class is decided once, when the certificate is first seen
    # (docs/learning-monitor.md), so a key edited afterwards may leave it other than a fresh look would.
    verdicts = brute_force(runtime, day, manual=CertificateClassifier(runtime).manual_pairs())
    for term_id in LEVELS:
        stored = sorted((u, row[1], row[3]) for (t, u), row in model_rows(runtime).items() if t == term_id)
        assert stored == brute_sleepers(verdicts, term_id)

    outcome = increments.run(timedelta(0))  # a reconciling rebuild is due
    assert outcome.kind == "rebuild"
    assert outcome.missed == {}
    with runtime.sessions() as session:
        state = session.get(SleeperScan, "site")
        assert state.missed == {} and state.reconciled_at is not None


def test_a_scan_that_misses_a_change_is_reported_by_the_reconciling_rebuild(site):
    """The safety net works: a change hidden from the scan (its digest forged) is found and counted."""
    keys = [{"user_id": 1, "term_id": CHILD, "status": "used", "is_banned": 0, "key_type": "wpm_term_keys",
             "is_unlimited": 0, "date_start": (DAY - timedelta(days=40)).isoformat(),
             "date_end": (DAY - timedelta(days=10)).isoformat(), "date_registered": None, "meta": True}]
    site.load(keys, [], {PARENT: None, CHILD: None, OTHER: None}, set())
    runtime = site.runtime
    runtime.access_policy = AccessPolicy()
    runtime.clock = _noon(DAY)
    increments = SleeperIncrements(runtime)
    increments.run(NEVER)
    assert set(model_rows(runtime)) == {(CHILD, 1)}

    Writer(site).apply(("extend_in_place", 0, 30), DAY)      # renewed in place: no longer a sleeper
    fresh = increments._digests()[0]                            # ... but the scan is blinded
    with runtime.sessions.begin() as session:
        session.get(SleeperScan, "site").digests = {f: {str(b): v for b, v in d.items()} for f, d in fresh.items()}
    assert increments.run(NEVER).kind == "idle"
    assert set(model_rows(runtime)) == {(CHILD, 1)}            # stale, as forged

    outcome = increments.run(timedelta(0))
    assert outcome.missed == {str(CHILD): {"extra": 1}}
    assert model_rows(runtime) == {}
    with runtime.sessions() as session:
        assert session.get(SleeperScan, "site").missed == {str(CHILD): {"extra": 1}}


@pytest.mark.mariadb
def test_on_mariadb_the_server_s_digests_catch_every_kind_of_change(mariadb_database, tmp_path):
    """The digests MariaDB computes (GROUP BY, CRC32, BIT_XOR) see in-place edits of keys, activation
    times, users and their meta; the scan then leaves the model equal to a full pass."""
    from tests.monitor.test_refresh_and_query import SEEDED_DAY, _mariadb_site

    runtime = _mariadb_site(mariadb_database, tmp_path, users=300, levels=6, seed=5)
    writer = sa.create_engine(mariadb_database)
    try:
        increments = SleeperIncrements(runtime)
        assert increments.run(NEVER).kind == "rebuild"
        assert increments.run(NEVER).kind == "idle"
        p = runtime.site.prefix
        sleepers = sorted(model_rows(runtime))
        (t1, u1), (t2, u2), (t3, u3), (t4, u4) = sleepers[0], sleepers[7], sleepers[15], sleepers[25]
        with writer.begin() as conn:
            conn.exec_driver_sql("SET SESSION sql_mode = ''")
            key = conn.execute(sa.text(f"SELECT id FROM {p}memberlux_term_keys WHERE user_id = :u AND term_id = :t "
                                       "ORDER BY date_end DESC LIMIT 1"), {"u": u1, "t": t1}).scalar()
            conn.execute(sa.text(f"UPDATE {p}memberlux_term_keys SET date_end = :e WHERE id = :k"),
                         {"e": SEEDED_DAY + timedelta(days=20), "k": key})                     # renewed in place
            conn.execute(sa.text(f"UPDATE {p}usermeta SET meta_value = 'Переименован' WHERE user_id = :u "
                                 "AND meta_key = 'first_name'"), {"u": u2})                      # renamed
            conn.execute(sa.text(f"UPDATE {p}users SET user_email = 'changed@example.org' WHERE ID = :u"), {"u": u3})
            key4 = conn.execute(sa.text(f"SELECT id FROM {p}memberlux_term_keys WHERE user_id = :u AND term_id = :t "
                                        "ORDER BY id LIMIT 1"), {"u": u4, "t": t4}).scalar()
            conn.execute(sa.text(f"DELETE FROM {p}memberlux_keys_meta WHERE key_id = :k"), {"k": key4})
            conn.execute(sa.text(f"INSERT INTO {p}memberlux_keys_meta (key_id, activation_datetime, source) "
                                 "VALUES (:k, '2026-11-01 08:00:00', 'admin')"), {"k": key4})   # activation time
        outcome = increments.run(NEVER)
        assert outcome.kind == "scan" and outcome.buckets >= 1
        assert_model_is_a_full_rebuild(runtime, SEEDED_DAY)
        rows = model_rows(runtime)
        assert (t1, u1) not in rows
        assert rows[(t2, u2)][6] == "Переименован" and rows[(t3, u3)][4] == "changed@example.org"
        assert rows[(t4, u4)][2] == date(2026, 11, 1)
        assert increments.run(NEVER).kind == "idle"
    finally:
        writer.dispose()
        runtime.close()


def test_stored_tuple_is_the_row_as_stored_cut_to_the_columns():
    day = date(2026, 1, 1)
    short = (7, day, None, False, "a@b.c", "ann", "Ann", "Lee")
    assert stored_tuple(short) == short
    long = (7, day, day, 1, "e" * 120, "l" * 70, "f" * 130, None)
    assert stored_tuple(long) == (7, day, day, True, "e" * 100, "l" * 60, "f" * 100, "")
    assert stored_tuple(short[:3] + (True,) + ("e" * 100, "l" * 60, "f" * 100, "x" * 101))[4:] == \
        ("e" * 100, "l" * 60, "f" * 100, "x" * 100)
