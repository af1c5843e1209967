"""Certificate classes in the store: incremental sync, revalidation, and the sets the sleepers rule reads.

Sites are seeded by the devstack (SQLite, and MariaDB for one end-to-end run); the store is SQLite.
"""

from __future__ import annotations

import shutil
from datetime import date, timedelta

import pytest
import requests
import sqlalchemy as sa

from sidecar.bootstrap import build_runtime, store_url
from sidecar.devstack.seed import seed_site
from sidecar.devstack.site import build_demo_site
from tests.sites import empty_site_schema
from sidecar.monitor.certificates import (
    CURSOR_NAME,
    RESCAN_IDS,
    CertificateClassifier,
    fingerprint,
    sync_job,
)
from sidecar.store.monitor_models import CertificateClassRow, WatchState
from tests.stores import migrate_store

TODAY = date(2026, 11, 24)
SITE = {"users": 150, "levels": 5, "seed": 11}
CERT = "wp_memberlux_certificate"


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("cert-site") / "wordpress.sqlite"
    summary = build_demo_site(f"sqlite:///{path}", today=TODAY, fresh=True, **SITE)
    assert summary.auto_certificates and summary.manual_certificates, "the seed should issue both kinds"
    return path, summary


@pytest.fixture
def seeded(seeded_template, tmp_path):
    """(site URL, SeedSummary) of a private copy of the seeded site."""
    template, summary = seeded_template
    target = tmp_path / "site.sqlite"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}", summary


def make_runtime(settings_for, site_url: str, emulator=None):
    settings = settings_for(site_url, emulator)
    migrate_store(store_url(settings))
    return build_runtime(settings)


@pytest.fixture
def seeded_runtime(seeded, settings_for):
    runtime = make_runtime(settings_for, seeded[0])
    try:
        yield runtime
    finally:
        runtime.close()


@pytest.fixture
def writer(seeded):
    engine = sa.create_engine(seeded[0])
    try:
        yield engine
    finally:
        engine.dispose()


def stored(runtime) -> dict[int, CertificateClassRow]:
    with runtime.sessions() as session:
        return {row.certificate_id: row for row in session.scalars(sa.select(CertificateClassRow))}


def live(engine) -> list[sa.RowMapping]:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT * FROM {CERT} ORDER BY certificate_id")).mappings().all()


def cursor(runtime) -> int | None:
    with runtime.sessions() as session:
        state = session.get(WatchState, CURSOR_NAME)
        return None if state is None else state.value


def insert_certificate(engine, *, user_id: int, level_id: int, date_issue: date, create_date: date,
                       certificate_id: int | None = None, responsible: int = 1) -> int:
    values = {"user_id": user_id, "wpmlevel_id": level_id, "certificate_name": "Курс",
              "certificate_template_id": 1, "date_issue": date_issue.isoformat(), "series": "ML",
              "number": f"{user_id:05d}", "responsible_person": responsible, "create_date": create_date.isoformat(),
              "course_name": "Курс", "custom_fields": ""}
    if certificate_id is not None:
        values["certificate_id"] = certificate_id
    columns = ", ".join(values)
    params = ", ".join(f":{name}" for name in values)
    with engine.begin() as conn:
        result = conn.execute(sa.text(f"INSERT INTO {CERT} ({columns}) VALUES ({params})"), values)
        return certificate_id if certificate_id is not None else int(result.lastrowid)


def set_level_mode(engine, level_id: int, mode: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM wp_termmeta WHERE term_id = :t AND meta_key = '_mblc_how_to_issue'"),
                     {"t": level_id})
        conn.execute(sa.text("INSERT INTO wp_termmeta (term_id, meta_key, meta_value) VALUES (:t, '_mblc_how_to_issue', :m)"),
                     {"t": level_id, "m": mode})


def expected_class(row, summary) -> str:
    """What the seed issued: auto levels insert auto certificates dated the activation day; its manual
    certificates on auto levels carry an earlier issue date."""
    if row["wpmlevel_id"] in summary.auto_certificate_levels and str(row["date_issue"]) == str(row["create_date"]):
        return "auto"
    return "manual"


def level_with_mode(runtime, mode: str) -> int:
    for level in runtime.reader.levels():
        if runtime.reader.level_meta(level.term_id).get("_mblc_how_to_issue") == mode:
            return level.term_id
    raise AssertionError(f"no level with mode {mode!r}")


# ---------------------------------------------------------------------------------------------
# Classification of a seeded site


def test_seeded_certificates_are_classified_as_the_seed_issued_them(seeded, seeded_runtime, writer):
    _url, summary = seeded
    report = CertificateClassifier(seeded_runtime).sync(batch=10)  # several batches
    rows = live(writer)
    assert report.available and report.complete
    assert report.new == len(rows) == summary.certificates
    assert report.last_id == rows[-1]["certificate_id"] == cursor(seeded_runtime)
    classes = stored(seeded_runtime)
    assert set(classes) == {row["certificate_id"] for row in rows}
    for row in rows:
        known = classes[row["certificate_id"]]
        assert known.cls == expected_class(row, summary), (dict(row), known.reason)
        assert (known.user_id, known.level_id) == (row["user_id"], row["wpmlevel_id"])
        assert known.deleted_at is None and known.reason
    assert sum(c.cls == "auto" for c in classes.values()) == summary.auto_certificates
    assert sum(c.cls == "manual" for c in classes.values()) == summary.manual_certificates
    for level in summary.manual_certificate_levels:
        assert all(c.cls == "manual" for c in classes.values() if c.level_id == level)


def test_manual_sets_for_the_sleepers_rule(seeded, seeded_runtime, writer):
    _url, summary = seeded
    classifier = CertificateClassifier(seeded_runtime)
    classifier.sync()
    rows = live(writer)
    manual = {(r["user_id"], r["wpmlevel_id"]) for r in rows if expected_class(r, summary) == "manual"}
    assert classifier.manual_pairs() == manual
    for level in summary.level_ids:
        assert classifier.manual_users(level) == {u for u, lv in manual if lv == level}
    # Auto certificates never exclude anybody.
    for level in summary.auto_certificate_levels:
        auto_only = {r["user_id"] for r in rows if r["wpmlevel_id"] == level} - classifier.manual_users(level)
        assert auto_only


def test_activation_days_are_read_per_batch_not_per_certificate(seeded, seeded_runtime):
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        if "memberlux_term_keys" in statement:
            statements.append(statement)

    sa.event.listen(seeded_runtime.wp_engine, "before_cursor_execute", count)
    try:
        report = CertificateClassifier(seeded_runtime).sync(batch=1000)
    finally:
        sa.event.remove(seeded_runtime.wp_engine, "before_cursor_execute", count)
    assert report.new == seeded[1].certificates > 1
    assert len(statements) == 1


def test_re_running_sync_is_idempotent(seeded_runtime):
    classifier = CertificateClassifier(seeded_runtime)
    first = classifier.sync()
    before = {cid: (r.cls, r.reason, r.fingerprint, r.first_seen_at, r.deleted_at)
              for cid, r in stored(seeded_runtime).items()}
    for _ in range(2):
        again = CertificateClassifier(seeded_runtime).sync()
        assert (again.new, again.reclassified, again.deleted, again.restored) == (0, 0, 0, 0)
        assert again.last_id == first.last_id
        assert 0 < again.scanned <= RESCAN_IDS  # only the safety margin is read again
    after = {cid: (r.cls, r.reason, r.fingerprint, r.first_seen_at, r.deleted_at)
             for cid, r in stored(seeded_runtime).items()}
    assert after == before


def test_revalidate_of_an_unchanged_site_changes_nothing(seeded_runtime):
    classifier = CertificateClassifier(seeded_runtime)
    classifier.sync()
    before = {cid: (r.cls, r.fingerprint, r.deleted_at) for cid, r in stored(seeded_runtime).items()}
    report = classifier.revalidate(batch=7)
    assert report.checked == len(before)
    assert (report.deleted, report.reclassified, report.restored) == (0, 0, 0)
    assert {cid: (r.cls, r.fingerprint, r.deleted_at) for cid, r in stored(seeded_runtime).items()} == before


# ---------------------------------------------------------------------------------------------
# Certificates issued through the emulated site


def test_manual_certificate_issued_on_an_auto_level_is_manual(runtime, emulator):
    base_url, login, password, engine = emulator
    auto_level = level_with_mode(runtime, "auto")
    with engine.connect() as conn:
        holders = set(conn.execute(sa.text("SELECT user_id FROM wp_memberlux_term_keys WHERE term_id = :t "
                                           "AND user_id IS NOT NULL"), {"t": auto_level}).scalars())
        learners = conn.execute(sa.text("SELECT ID FROM wp_users ORDER BY ID")).scalars().all()
    user_id = next(u for u in learners if u not in holders and u > 10)
    url = base_url + "/devstack/certificates"
    # Issue date left to "today": only the missing activation shows it was issued by hand.
    same_day = requests.post(url, auth=(login, password), json={"user_id": user_id, "level_id": auto_level}, timeout=30)
    assert same_day.status_code == 200, same_day.text
    back_dated = requests.post(url, auth=(login, password), timeout=30,
                               json={"user_id": user_id, "level_id": auto_level, "date_issue": "2026-01-15"})
    assert back_dated.status_code == 200, back_dated.text
    classifier = CertificateClassifier(runtime)
    assert user_id not in classifier.manual_users(auto_level)
    report = classifier.sync()
    assert report.new >= 2
    classes = stored(runtime)
    for response in (same_day, back_dated):
        assert classes[response.json()["certificate_id"]].cls == "manual"
    assert classes[same_day.json()["certificate_id"]].reason.startswith("no activation")
    assert classes[back_dated.json()["certificate_id"]].reason.startswith("issue date")
    assert user_id in classifier.manual_users(auto_level)
    assert (user_id, auto_level) in classifier.manual_pairs()


def test_auto_certificate_from_a_rest_order_on_an_auto_level_is_auto(runtime, emulator):
    base_url, login, password, engine = emulator
    auto_level = level_with_mode(runtime, "auto")
    classifier = CertificateClassifier(runtime)
    classifier.sync()
    response = requests.post(base_url + "/wp-json/mbl/v1/order", auth=(login, password), timeout=30,
                             json={"customer": {"email": "auto-cert@example.com"},
                                   "product": {"term_id": auto_level, "duration": 1, "units": "months"}})
    assert response.status_code == 200, response.text
    user_id = response.json()["user_id"]
    with engine.connect() as conn:
        issued = conn.execute(sa.text(f"SELECT certificate_id FROM {CERT} WHERE user_id = :u"), {"u": user_id}).scalars().all()
    assert len(issued) == 1
    report = CertificateClassifier(runtime).sync()
    assert report.new == 1
    known = stored(runtime)[issued[0]]
    assert known.cls == "auto" and known.responsible_person is not None
    assert user_id not in classifier.manual_users(auto_level)
    # A renewal on the same auto level issues another auto certificate.
    again = requests.post(base_url + "/wp-json/mbl/v1/order", auth=(login, password), timeout=30,
                          json={"customer": {"email": "auto-cert@example.com"},
                                "product": {"term_id": auto_level, "duration": 1, "units": "months"}})
    assert again.status_code == 200
    assert CertificateClassifier(runtime).sync().new == 1
    assert {c.cls for c in stored(runtime).values() if c.user_id == user_id} == {"auto"}


# ---------------------------------------------------------------------------------------------
# Changes after classification


def test_level_mode_changed_later_does_not_change_stored_classes(seeded, seeded_runtime, writer):
    _url, summary = seeded
    CertificateClassifier(seeded_runtime).sync()
    before = {cid: r.cls for cid, r in stored(seeded_runtime).items()}
    auto_level = summary.auto_certificate_levels[0]
    manual_level = summary.manual_certificate_levels[0]
    set_level_mode(writer, auto_level, "employee")
    set_level_mode(writer, manual_level, "auto")
    classifier = CertificateClassifier(seeded_runtime)
    assert classifier.sync().reclassified == 0
    assert classifier.revalidate().reclassified == 0
    assert {cid: r.cls for cid, r in stored(seeded_runtime).items()} == before
    # New certificates are classified with the level's mode at first sight.
    user_id = next(r["user_id"] for r in live(writer) if r["wpmlevel_id"] == auto_level)
    newer = insert_certificate(writer, user_id=user_id, level_id=auto_level, date_issue=TODAY, create_date=TODAY)
    CertificateClassifier(seeded_runtime).sync()
    assert stored(seeded_runtime)[newer].cls == "manual"


def test_deleted_certificate_is_marked_by_revalidate_and_stops_counting(seeded, seeded_runtime, writer):
    _url, summary = seeded
    classifier = CertificateClassifier(seeded_runtime)
    classifier.sync()
    counts: dict[tuple[int, int], int] = {}
    for c in stored(seeded_runtime).values():
        if c.cls == "manual":
            counts[(c.user_id, c.level_id)] = counts.get((c.user_id, c.level_id), 0) + 1
    victim = min((c for c in stored(seeded_runtime).values()
                  if c.cls == "manual" and counts[(c.user_id, c.level_id)] == 1), key=lambda c: c.certificate_id)
    assert victim.user_id in classifier.manual_users(victim.level_id)
    with writer.begin() as conn:
        saved = conn.execute(sa.text(f"SELECT * FROM {CERT} WHERE certificate_id = :i"),
                             {"i": victim.certificate_id}).mappings().one()
        conn.execute(sa.text(f"DELETE FROM {CERT} WHERE certificate_id = :i"), {"i": victim.certificate_id})
    # An old id lies below the sync's re-read window: sync alone does not notice.
    assert CertificateClassifier(seeded_runtime).sync().deleted == 0
    report = classifier.revalidate()
    assert report.deleted == 1
    assert stored(seeded_runtime)[victim.certificate_id].deleted_at is not None
    assert victim.user_id not in classifier.manual_users(victim.level_id)
    assert (victim.user_id, victim.level_id) not in classifier.manual_pairs()
    assert classifier.revalidate().deleted == 0  # marked once
    # The row comes back (restored from a backup): the mark is cleared and it counts again.
    with writer.begin() as conn:
        columns = ", ".join(saved.keys())
        conn.execute(sa.text(f"INSERT INTO {CERT} ({columns}) VALUES ({', '.join(':' + k for k in saved.keys())})"),
                     dict(saved))
    restored = classifier.revalidate()
    assert (restored.restored, restored.reclassified) == (1, 0)
    assert stored(seeded_runtime)[victim.certificate_id].deleted_at is None
    assert victim.user_id in classifier.manual_users(victim.level_id)


def test_deleting_the_newest_certificates_is_seen_by_sync(seeded_runtime, writer):
    first = CertificateClassifier(seeded_runtime).sync()
    newest = [r["certificate_id"] for r in live(writer)][-2:]
    with writer.begin() as conn:
        conn.execute(sa.text(f"DELETE FROM {CERT} WHERE certificate_id >= :i"), {"i": newest[0]})
    report = CertificateClassifier(seeded_runtime).sync()
    assert report.deleted == 2
    assert report.last_id == cursor(seeded_runtime) < first.last_id
    assert all(stored(seeded_runtime)[cid].deleted_at is not None for cid in newest)


def test_rewritten_date_issue_is_reclassified(seeded, seeded_runtime, writer):
    _url, summary = seeded
    classifier = CertificateClassifier(seeded_runtime)
    classifier.sync()
    auto = min((c for c in stored(seeded_runtime).values() if c.cls == "auto"), key=lambda c: c.certificate_id)
    with writer.begin() as conn:
        conn.execute(sa.text(f"UPDATE {CERT} SET date_issue = :d WHERE certificate_id = :i"),
                     {"d": (auto.create_date - timedelta(days=30)).isoformat(), "i": auto.certificate_id})
    report = classifier.revalidate()
    assert report.reclassified == 1 and report.deleted == 0
    rewritten = stored(seeded_runtime)[auto.certificate_id]
    assert rewritten.cls == "manual" and rewritten.reason.startswith("issue date")
    assert rewritten.date_issue == auto.create_date - timedelta(days=30)
    assert rewritten.fingerprint == fingerprint(auto.user_id, auto.level_id, rewritten.date_issue, auto.create_date)
    assert rewritten.first_seen_at == auto.first_seen_at
    assert auto.user_id in classifier.manual_users(auto.level_id)


def test_changed_responsible_person_alone_is_not_a_rewrite(seeded_runtime, writer):
    classifier = CertificateClassifier(seeded_runtime)
    classifier.sync()
    target = min(stored(seeded_runtime).values(), key=lambda c: c.certificate_id)
    with writer.begin() as conn:
        conn.execute(sa.text(f"UPDATE {CERT} SET responsible_person = 424242 WHERE certificate_id = :i"),
                     {"i": target.certificate_id})
    assert classifier.revalidate().reclassified == 0
    assert stored(seeded_runtime)[target.certificate_id].responsible_person == 424242
    assert stored(seeded_runtime)[target.certificate_id].cls == target.cls


def test_rewrite_of_a_recent_certificate_is_also_caught_by_sync(seeded_runtime, writer):
    CertificateClassifier(seeded_runtime).sync()
    newest = max(stored(seeded_runtime).values(), key=lambda c: c.certificate_id)
    with writer.begin() as conn:
        conn.execute(sa.text(f"UPDATE {CERT} SET create_date = :d WHERE certificate_id = :i"),
                     {"d": "2020-01-01", "i": newest.certificate_id})
    report = CertificateClassifier(seeded_runtime).sync()
    assert report.reclassified == 1
    assert stored(seeded_runtime)[newest.certificate_id].cls == "manual"


def test_a_concurrent_sync_inserting_the_same_certificates_is_absorbed(seeded_runtime):
    racing = CertificateClassifier(seeded_runtime)
    other = CertificateClassifier(seeded_runtime)
    real_apply = racing._apply
    raced = []

    def apply_then_let_the_other_commit(session, rows, now):
        outcome = real_apply(session, rows, now)
        if not raced:
            raced.append(other.sync())  # commits the same new rows before this batch is flushed
        return outcome

    racing._apply = apply_then_let_the_other_commit
    report = racing.sync()
    assert raced and raced[0].new > 0
    assert report.new == 0 and report.reclassified == 0
    assert len(stored(seeded_runtime)) == raced[0].new


# ---------------------------------------------------------------------------------------------
# Out-of-order visibility


def test_ids_that_become_visible_out_of_order_are_picked_up(seeded, seeded_runtime, writer):
    _url, summary = seeded
    level = summary.manual_certificate_levels[0]
    user_id = next(r["user_id"] for r in live(writer))
    CertificateClassifier(seeded_runtime).sync()
    insert_certificate(writer, certificate_id=1000, user_id=user_id, level_id=level, date_issue=TODAY,
                       create_date=TODAY)
    assert CertificateClassifier(seeded_runtime).sync().new == 1
    assert cursor(seeded_runtime) == 1000
    # id 999 was taken by a transaction that committed after 1000 had been read.
    insert_certificate(writer, certificate_id=999, user_id=user_id, level_id=level, date_issue=TODAY,
                       create_date=TODAY)
    report = CertificateClassifier(seeded_runtime).sync()
    assert report.new == 1 and report.last_id == 1000
    assert {999, 1000} <= set(stored(seeded_runtime))
    assert CertificateClassifier(seeded_runtime).sync().new == 0


# ---------------------------------------------------------------------------------------------
# Without the certificates module


@pytest.fixture
def site_without_certificates(tmp_path):
    url = f"sqlite:///{tmp_path / 'nocert.sqlite'}"
    engine = sa.create_engine(url)
    try:
        empty_site_schema(engine, without_modules=("certificates",))
        seed_site(engine, users=20, levels=3, seed=5, today=TODAY)
    finally:
        engine.dispose()
    return url


def test_missing_certificates_module_is_reported_and_excludes_nobody(site_without_certificates, settings_for):
    runtime = make_runtime(settings_for, site_without_certificates)
    try:
        classifier = CertificateClassifier(runtime)
        assert not classifier.available
        report = classifier.sync()
        assert not report.available and "not installed" in report.message
        assert report.summary() == report.message
        revalidation = classifier.revalidate()
        assert not revalidation.available and "not installed" in revalidation.summary()
        assert classifier.manual_users(runtime.reader.levels()[0].term_id) == set()
        assert classifier.manual_pairs() == set()
        assert "not installed" in sync_job(runtime)
        assert cursor(runtime) is None
    finally:
        runtime.close()


# ---------------------------------------------------------------------------------------------
# Worker


def test_worker_registers_both_jobs(seeded_runtime):
    from sidecar.store import leases
    from sidecar.worker import build_scheduler, run_leased

    scheduler = build_scheduler(seeded_runtime, background=True)
    jobs = {job.id: job for job in scheduler.get_jobs()}
    sync = jobs["monitor.certificates.sync"]
    revalidate = jobs["monitor.certificates.revalidate"]
    assert sync.trigger.interval == timedelta(seconds=seeded_runtime.settings.schedule.certificate_poll_seconds)
    assert revalidate.trigger.interval == timedelta(hours=1)
    assert run_leased(*sync.args)
    assert "new" in leases.get(seeded_runtime.sessions, "monitor.certificates.sync").last_outcome
    assert run_leased(*revalidate.args)
    assert "checked" in leases.get(seeded_runtime.sessions, "monitor.certificates.revalidate").last_outcome


# ---------------------------------------------------------------------------------------------
# MariaDB site, SQLite store


@pytest.mark.mariadb
def test_mariadb_site_end_to_end(mariadb_database, settings_for):
    summary = build_demo_site(mariadb_database, today=TODAY, **SITE)
    runtime = make_runtime(settings_for, mariadb_database)
    writer = sa.create_engine(mariadb_database)
    try:
        classifier = CertificateClassifier(runtime)
        report = classifier.sync(batch=16)
        rows = live(writer)
        assert report.new == len(rows) == summary.certificates
        classes = stored(runtime)
        assert all(classes[r["certificate_id"]].cls == expected_class(r, summary) for r in rows)
        assert sum(c.cls == "auto" for c in classes.values()) == summary.auto_certificates
        assert CertificateClassifier(runtime).sync().new == 0

        # Out-of-order ids, a deletion and a rewrite, then a revalidation.
        top = rows[-1]["certificate_id"]
        level = summary.manual_certificate_levels[0]
        user_id = rows[0]["user_id"]
        insert_certificate(writer, certificate_id=top + 20, user_id=user_id, level_id=level,
                           date_issue=TODAY, create_date=TODAY)
        assert CertificateClassifier(runtime).sync().new == 1
        insert_certificate(writer, certificate_id=top + 19, user_id=user_id, level_id=level,
                           date_issue=TODAY, create_date=TODAY)
        assert CertificateClassifier(runtime).sync().new == 1
        manual = next(c for c in classes.values() if c.cls == "manual")
        auto = next(c for c in classes.values() if c.cls == "auto")
        with writer.begin() as conn:
            conn.execute(sa.text(f"DELETE FROM {CERT} WHERE certificate_id = :i"), {"i": manual.certificate_id})
            conn.execute(sa.text(f"UPDATE {CERT} SET date_issue = :d WHERE certificate_id = :i"),
                         {"d": (auto.create_date - timedelta(days=3)).isoformat(), "i": auto.certificate_id})
        revalidation = CertificateClassifier(runtime).revalidate(batch=10)
        assert (revalidation.deleted, revalidation.reclassified) == (1, 1)
        after = stored(runtime)
        assert after[manual.certificate_id].deleted_at is not None
        assert after[auto.certificate_id].cls == "manual"
        assert (auto.user_id, auto.level_id) in CertificateClassifier(runtime).manual_pairs()
    finally:
        writer.dispose()
        runtime.close()
