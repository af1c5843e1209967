"""The old plugin's report side by side with the sidecar's (``sidecar.monitor.legacy_compare``).

A site is seeded with one learner per defect of the old live query that can make the two reports differ
(legacy-plugins.md §3.7: auto certificates counted, the window compared instead of today, the hierarchy,
WordPress's ``user_status``, basket rows; and the learners the old query gets right although older
versions did not: banned latest rows, zero-length keys, blocked accounts). The comparison must list
every difference with the intended reason and none as unexplained — on SQLite, on another table prefix
(which the plugin itself cannot read) and on MariaDB. Then: the default windows a day apart, the
sidecar's certificates lagging behind the site, an injected inconsistency, the statement time limit,
and the command line.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from sidecar.bootstrap import build_runtime
from sidecar.cli import cli
from sidecar.clock import FixedClock
from sidecar.config import settings_from_mapping
from sidecar.devstack.wpschema import ZERO_DATE
from sidecar.domain.legacy_compare import CompareReason
from sidecar.memberlux.legacy_query import LegacyQueryTimeout, LegacyTables
from sidecar.monitor import legacy_compare
from sidecar.monitor.certificates import CertificateClassifier
from sidecar.monitor.legacy_compare import CompareInputError, compare
from sidecar.monitor.service import UnknownLevel
from tests.sites import empty_site_schema
from tests.stores import migrate_store

D = date
TODAY = D(2026, 11, 24)
NOON = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
PARENT, CHILD = 20, 21          # CHILD issues certificates automatically; PARENT's keys open CHILD
FROM, TO = D(2026, 10, 1), D(2026, 12, 31)   # a window reaching past today, as owners set it

#: user -> (what the learner is, {"keys": [...], ...}); a key is (level, start, end, flags).
LEARNERS: dict[int, dict] = {
    101: {"what": "plain sleeper", "keys": [(CHILD, "2026-10-01", "2026-11-01")]},
    102: {"what": "auto certificate only (3.7.1)", "keys": [(CHILD, "2026-10-01", "2026-11-01")], "auto_cert": True},
    103: {"what": "manual certificate on an auto level", "keys": [(CHILD, "2026-10-01", "2026-11-01")],
          "manual_cert": True},
    104: {"what": "active until December (3.7.3)", "keys": [(CHILD, "2026-11-10", "2026-12-10")]},
    105: {"what": "paid ahead after a gap (3.7.3)",
          "keys": [(CHILD, "2026-10-01", "2026-11-01"), (CHILD, "2026-12-01", "2026-12-20")]},
    106: {"what": "banned latest row (3.7.5, right in V3)",
          "keys": [(CHILD, "2026-10-05", "2026-11-05"), (CHILD, "2026-11-05", "2027-01-05", "banned")]},
    107: {"what": "two keys ending the same day (3.7.6)",
          "keys": [(CHILD, "2026-10-10", "2026-11-10"), (CHILD, "2026-10-12", "2026-11-10")]},
    108: {"what": "a parent level's key runs on (3.7.7)",
          "keys": [(CHILD, "2026-10-01", "2026-11-01"), (PARENT, "2026-06-01", "2027-06-01")]},
    109: {"what": "blocked in MemberLux (3.7.7)", "keys": [(CHILD, "2026-10-01", "2026-11-01")], "blocked": True},
    110: {"what": "WordPress user_status 1 (3.4)", "keys": [(CHILD, "2026-10-01", "2026-11-01")], "user_status": 1},
    111: {"what": "a basket row runs on (3.7.7)",
          "keys": [(CHILD, "2026-10-01", "2026-11-01"), (CHILD, "2026-11-01", "2027-02-01", "basket")]},
    112: {"what": "unlimited", "keys": [(CHILD, "2026-01-01", "2026-02-01", "unlimited")]},
    113: {"what": "deleted user", "keys": [(CHILD, "2026-10-01", "2026-11-01")], "deleted": True},
    114: {"what": "an unused code left with the user, placeholder end",
          "keys": [(CHILD, "2026-10-01", "2026-10-15"), (CHILD, ZERO_DATE, "2036-01-01", "new")]},
    115: {"what": "zero-length key (legacy bridge)", "keys": [(CHILD, "2026-11-03", "2026-11-03")]},
    116: {"what": "access ended today", "keys": [(CHILD, "2026-10-24", "2026-11-24")]},
    117: {"what": "auto certificate and still active", "keys": [(CHILD, "2026-11-10", "2026-12-10")], "auto_cert": True},
}
IN_BOTH = {101, 106, 107, 109, 115, 116}
EXPECTED = {102: "auto_certificate", 104: "window_in_future", 105: "window_in_future", 108: "ancestor_active",
            110: "wp_user_status", 114: "keys_not_counted"}


class Site:
    """A WordPress site written through its own engine (the sidecar only ever reads it)."""

    def __init__(self, url: str, prefix: str = "wp_") -> None:
        self.url, self.prefix = url, prefix
        self.writer = sa.create_engine(url)
        self.md = empty_site_schema(self.writer, prefix)

    def t(self, short: str) -> sa.Table:
        return self.md.tables[self.prefix + short]

    def insert(self, short: str, rows: list[dict]) -> None:
        if rows:
            with self.writer.begin() as conn:
                if conn.dialect.name == "mysql":
                    conn.exec_driver_sql("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'")  # zero dates
                conn.execute(self.t(short).insert(), rows)

    def level(self, term_id: int, name: str, parent: int = 0, certificates: str | None = None) -> None:
        self.insert("terms", [{"term_id": term_id, "name": name, "slug": f"level-{term_id}"}])
        self.insert("term_taxonomy", [{"term_taxonomy_id": term_id, "term_id": term_id, "taxonomy": "wpm-levels",
                                       "description": "", "parent": parent}])
        if certificates:
            self.insert("termmeta", [{"term_id": term_id, "meta_key": "_mblc_has_certificate", "meta_value": "yes"},
                                     {"term_id": term_id, "meta_key": "_mblc_how_to_issue", "meta_value": certificates}])

    def user(self, user_id: int, *, user_status: int = 0, blocked: bool = False) -> None:
        self.insert("users", [{"ID": user_id, "user_login": f"learner{user_id}", "user_email": f"learner{user_id}@example.org",
                               "display_name": f"Learner {user_id}", "user_status": user_status}])
        meta = [{"user_id": user_id, "meta_key": "first_name", "meta_value": f"Имя{user_id}"}]
        if blocked:
            meta.append({"user_id": user_id, "meta_key": "wpm_status", "meta_value": "inactive"})
        self.insert("usermeta", meta)

    def key(self, user_id: int, term_id: int, start: str, end: str, *flags: str) -> None:
        with self.writer.connect() as conn:
            key_id = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(self.t("memberlux_term_keys").c.id), 0)))
                         .scalar()) + 1
        status = "new" if "new" in flags else "used"
        self.insert("memberlux_term_keys", [{
            "id": key_id, "term_id": term_id, "user_id": user_id, "key": f"code-{key_id}", "status": status,
            "key_type": "wpm_keys_basket" if "basket" in flags else "wpm_term_keys", "is_banned": int("banned" in flags),
            "is_unlimited": int("unlimited" in flags), "duration": 1, "units": "months", "date_start": start,
            "date_end": end, "date_registered": None if status == "new" else start}])
        if status != "new":
            self.insert("memberlux_keys_meta", [{"key_id": key_id, "activation_datetime": f"{start} 10:00:00",
                                                 "source": "purchase"}])

    def certificate(self, user_id: int, level: int, issued: str, created: str) -> int:
        with self.writer.connect() as conn:
            cert_id = int(conn.execute(sa.select(sa.func.coalesce(
                sa.func.max(self.t("memberlux_certificate").c.certificate_id), 0))).scalar()) + 1
        self.insert("memberlux_certificate", [{
            "certificate_id": cert_id, "user_id": user_id, "wpmlevel_id": level, "certificate_name": "Course",
            "certificate_template_id": 1, "date_issue": issued, "series": "S", "number": f"{cert_id:05d}",
            "responsible_person": 0, "create_date": created}])
        return cert_id

    def timezone(self, name: str) -> None:
        self.insert("options", [{"option_name": "timezone_string", "option_value": name, "autoload": "yes"}])


def seed_defects(site: Site) -> None:
    site.level(PARENT, "Курс целиком")
    site.level(CHILD, "Модуль 1", parent=PARENT, certificates="auto")
    for user_id, learner in LEARNERS.items():
        if not learner.get("deleted"):
            site.user(user_id, user_status=learner.get("user_status", 0), blocked=learner.get("blocked", False))
        for level, start, end, *flags in learner["keys"]:
            site.key(user_id, level, start, end, *flags)
        first_start = learner["keys"][0][1]
        if learner.get("auto_cert"):     # issued on activation: date_issue = create_date = activation day
            site.certificate(user_id, CHILD, first_start, first_start)
        if learner.get("manual_cert"):   # issued by hand later, back-dated
            site.certificate(user_id, CHILD, "2026-10-20", "2026-10-25")


def runtime_for(site: Site, store_dir: Path, *, clock=NOON, include_basket: bool = True):
    store = f"sqlite:///{store_dir / 'store.sqlite'}"
    migrate_store(store)
    settings = settings_from_mapping({
        "wordpress": {"db_url": site.url, "table_prefix": site.prefix, "include_basket_keys": include_basket},
        "memberlux": {"rest_base_url": "https://school.example/wp-json"},
        "store": {"url": store},
        "web": {"secret_key": "test-secret-key-not-for-production"},
    }, environ={})
    return build_runtime(settings, clock=FixedClock(clock))


@pytest.fixture
def defects(tmp_path):
    """The defects site on SQLite (prefix wp_), certificates classified, and its runtime."""
    site = Site(f"sqlite:///{tmp_path / 'wordpress.sqlite'}")
    seed_defects(site)
    runtime = runtime_for(site, tmp_path)
    CertificateClassifier(runtime).sync()
    yield site, runtime
    runtime.close()
    site.writer.dispose()


def reasons_of(comparison) -> dict[int, str]:
    return {row.user_id: row.reason.value for row in comparison.differences}


def assert_every_defect_explained(comparison) -> None:
    assert reasons_of(comparison) == EXPECTED
    assert comparison.unexplained == 0
    assert comparison.in_both == len(IN_BOTH)
    assert comparison.legacy_users == len(IN_BOTH) + 3          # 104, 105, 108 and the both-listed
    assert comparison.legacy_rows == comparison.legacy_users + 1  # learner 107's tie repeats a row
    assert comparison.legacy_count == comparison.legacy_users     # the count is per user
    assert comparison.sidecar_users == len(IN_BOTH) + 3          # 102, 110, 114
    counts = comparison.counts
    assert counts == {"auto_certificate": 1, "window_in_future": 2, "ancestor_active": 1, "wp_user_status": 1,
                      "keys_not_counted": 1, "site_day_window": 0, "certificates_out_of_sync": 0, "unexplained": 0}


# ---------------------------------------------------------------------------------------------
# Every defect gets its reason


def test_every_difference_on_the_defects_site_has_its_reason(defects):
    _site, runtime = defects
    comparison = compare(runtime, CHILD, date_from=FROM, date_to=TO)
    assert_every_defect_explained(comparison)
    rows = {row.user_id: row for row in comparison.differences}
    assert rows[104].in_legacy and not rows[104].in_sidecar and rows[104].verdict == "active"
    assert rows[105].verdict == "renewed" and rows[105].legacy_last_end == D(2026, 12, 20)
    assert rows[102].in_sidecar and rows[102].expired_on == D(2026, 11, 1) and rows[102].email == "learner102@example.org"
    assert rows[114].legacy_last_end == D(2036, 1, 1) and rows[114].expired_on == D(2026, 10, 15)
    assert comparison.tables.hard_coded
    assert (comparison.legacy_window, comparison.sidecar_window, comparison.day) == ((FROM, TO), (FROM, TO), TODAY)
    assert comparison.sidecar_window_end == TODAY


def test_the_differences_are_listed_by_reason_then_user(defects):
    _site, runtime = defects
    rows = compare(runtime, CHILD, date_from=FROM, date_to=TO).differences
    order = list(CompareReason)
    keys = [(order.index(row.reason), row.user_id) for row in rows]
    assert keys == sorted(keys)


def test_basket_keys_left_out_of_the_rule_are_keys_not_counted(defects, tmp_path):
    site, _runtime = defects
    store = tmp_path / "basketless"
    store.mkdir()
    runtime = runtime_for(site, store, include_basket=False)
    try:
        CertificateClassifier(runtime).sync()
        comparison = compare(runtime, CHILD, date_from=FROM, date_to=TO)
    finally:
        runtime.close()
    assert reasons_of(comparison) == {**EXPECTED, 111: "keys_not_counted"}
    assert comparison.unexplained == 0


def test_another_table_prefix_is_read_although_the_plugin_itself_cannot(tmp_path):
    site = Site(f"sqlite:///{tmp_path / 'wordpress.sqlite'}", prefix="school_")
    seed_defects(site)
    runtime = runtime_for(site, tmp_path)
    try:
        CertificateClassifier(runtime).sync()
        comparison = compare(runtime, CHILD, date_from=FROM, date_to=TO)
    finally:
        runtime.close()
        site.writer.dispose()
    assert_every_defect_explained(comparison)
    assert not comparison.tables.hard_coded
    assert comparison.tables == LegacyTables.from_prefix("school_")


@pytest.mark.mariadb
def test_every_difference_has_its_reason_on_mariadb(mariadb_database, tmp_path):
    site = Site(mariadb_database)
    seed_defects(site)
    runtime = runtime_for(site, tmp_path)
    try:
        CertificateClassifier(runtime).sync()
        assert_every_defect_explained(compare(runtime, CHILD, date_from=FROM, date_to=TO))
    finally:
        runtime.close()
        site.writer.dispose()


# ---------------------------------------------------------------------------------------------
# Windows left to default


def test_default_windows_take_the_sites_day_for_the_old_report_and_the_utc_day_for_the_sidecar(tmp_path):
    site = Site(f"sqlite:///{tmp_path / 'wordpress.sqlite'}")
    site.level(CHILD, "Модуль 1")
    site.timezone("Europe/Moscow")                 # UTC+3: at 22:30 UTC the site's day is already the 25th
    for user_id, end in ((201, "2026-11-24"), (202, "2026-11-25"), (203, "2026-11-23")):
        site.user(user_id)
        site.key(user_id, CHILD, "2026-10-20", end)
    runtime = runtime_for(site, tmp_path, clock=datetime(2026, 11, 24, 22, 30, tzinfo=timezone.utc))
    try:
        comparison = compare(runtime, CHILD)
        with_day = compare(runtime, CHILD, day=TODAY)
    finally:
        runtime.close()
        site.writer.dispose()
    assert comparison.site_today == D(2026, 11, 25) and comparison.day == TODAY
    assert comparison.legacy_window == (D(2026, 11, 25), D(2026, 11, 25))
    assert comparison.sidecar_window == (TODAY, TODAY)
    # Ended today (UTC): the sidecar's; ends tomorrow (UTC), the site's today: the old report's.
    assert reasons_of(comparison) == {201: "site_day_window", 202: "window_in_future"}
    # --date D: both windows default to D.
    assert with_day.legacy_window == with_day.sidecar_window == (TODAY, TODAY)
    assert with_day.differences == () and with_day.in_both == 1


# ---------------------------------------------------------------------------------------------
# The sidecar's copy of the certificates behind the site


def test_certificates_changed_since_the_last_sync_are_certificates_out_of_sync(defects):
    site, runtime = defects
    site.certificate(101, CHILD, "2026-11-20", "2026-11-22")            # a manual one, not classified yet
    with site.writer.begin() as conn:                                    # 103's manual one, deleted on the site
        conn.execute(site.t("memberlux_certificate").delete().where(site.t("memberlux_certificate").c.user_id == 103))
    comparison = compare(runtime, CHILD, date_from=FROM, date_to=TO)
    assert reasons_of(comparison) == {**EXPECTED, 101: "certificates_out_of_sync", 103: "certificates_out_of_sync"}
    rows = {row.user_id: row for row in comparison.differences}
    assert rows[101].in_sidecar and rows[103].in_legacy and rows[103].verdict == "manual_certificate"
    CertificateClassifier(runtime).sync()
    CertificateClassifier(runtime).revalidate()     # what the worker runs hourly: notices the deletion
    assert compare(runtime, CHILD, date_from=FROM, date_to=TO).counts["certificates_out_of_sync"] == 0


# ---------------------------------------------------------------------------------------------
# What no reason explains


def test_an_injected_inconsistency_is_reported_as_unexplained(defects, monkeypatch):
    _site, runtime = defects
    real = legacy_compare.live_sleepers

    def lossy(*args, **kwargs):
        # The sidecar's list loses a sleeper (101) and gains an unlimited learner (112).
        found = [s for s in real(*args, **kwargs) if s.user_id != 101]
        return [*found, found[0]._replace(user_id=112)]

    monkeypatch.setattr(legacy_compare, "live_sleepers", lossy)
    comparison = compare(runtime, CHILD, date_from=FROM, date_to=TO)
    assert reasons_of(comparison) == {**EXPECTED, 101: "unexplained", 112: "unexplained"}
    assert comparison.unexplained == 2
    rows = {row.user_id: row for row in comparison.differences}
    assert rows[101].in_legacy and rows[101].verdict == "sleeper"
    assert rows[112].in_sidecar and rows[112].verdict == "unlimited"


# ---------------------------------------------------------------------------------------------
# Input and the protection of the site


def test_an_unknown_level_or_a_reversed_window_is_refused(defects):
    _site, runtime = defects
    with pytest.raises(UnknownLevel, match="no access level with id 999"):
        compare(runtime, 999)
    with pytest.raises(CompareInputError, match="ends on 2026-10-01, before it starts on 2026-12-31") as caught:
        compare(runtime, CHILD, date_from=TO, date_to=FROM)
    assert (caught.value.start, caught.value.end) == (TO, FROM)
    with pytest.raises(CompareInputError, match="a day left out is today"):
        compare(runtime, CHILD, date_from=D(2026, 12, 1))


def test_no_time_limit_on_sqlite(defects):
    _site, runtime = defects
    assert compare(runtime, CHILD, date_from=FROM, date_to=TO, timeout=5).timeout is None


@pytest.mark.mariadb
def test_the_old_query_is_stopped_at_its_time_limit_on_mariadb(mariadb_database, tmp_path, monkeypatch):
    from sidecar.memberlux import legacy_query

    site = Site(mariadb_database)
    seed_defects(site)
    runtime = runtime_for(site, tmp_path)
    try:
        assert compare(runtime, CHILD, date_from=FROM, date_to=TO, timeout=30).timeout == 30
        monkeypatch.setattr(legacy_query, "legacy_v3_statements",
                            lambda *a, **k: (sa.select(sa.func.sleep(3)), sa.select(sa.literal(1))))
        with pytest.raises(LegacyQueryTimeout, match="max_statement_time"):
            compare(runtime, CHILD, date_from=FROM, date_to=TO, timeout=0.2)
        with runtime.wp_engine.connect() as conn:   # the pooled session has its limit back
            assert float(conn.exec_driver_sql("SELECT @@SESSION.max_statement_time").scalar()) == 0
    finally:
        runtime.close()
        site.writer.dispose()


# ---------------------------------------------------------------------------------------------
# The command line


@pytest.fixture
def command(defects, tmp_path):
    """``mlsidecar legacy compare …`` against the defects site, on its fixed clock."""
    site, runtime = defects
    config = tmp_path / "mlsidecar.toml"
    config.write_text(f'[wordpress]\ndb_url = "{site.url}"\n[memberlux]\nrest_base_url = "https://school.example/wp-json"\n'
                      f'[store]\nurl = "{runtime.settings.store.url}"\n[web]\nsecret_key = "test-secret-key-not-for-production"\n',
                      encoding="utf-8")

    def run(*words: str):
        return CliRunner().invoke(cli, ["legacy", "compare", *words], env={"MLS_CONFIG": str(config)},
                                  obj={"clock": FixedClock(NOON)})
    return run


def test_the_command_prints_the_reasons_and_the_differences(command):
    result = command("--level", str(CHILD), "--from", "2026-10-01", "--to", "2026-12-31")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "between 2026-10-01 and 2026-12-31 (both included, never compared with today)" in out
    assert "«Найдено» 9, 10 rows for 9 learners" in out and "is repeated" in out
    assert "expired between 2026-10-01 and 2026-11-24; 9 sleepers" in out
    assert "in both 6; only in the old report 3; only in the sidecar's 3" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert lines["window_in_future"].split()[1] == "2" and lines["unexplained"].split()[1] == "0"
    assert "old query let any certificate end a sleep" in lines["auto_certificate"]
    differences = {int(line.split()[0]): line.split()[-1] for line in out.splitlines() if line[:1].isdigit()}
    assert differences == EXPECTED
    assert "learner104@example.org  yes  no" in lines["104"]


def test_the_command_as_json_and_csv(command):
    result = command("--level", str(CHILD), "--from", "2026-10-01", "--to", "2026-12-31", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["counts"]["auto_certificate"] == 1 and data["unexplained"] == 0
    assert {d["user_id"]: d["reason"] for d in data["differences"]} == EXPECTED
    assert data["legacy"]["window"] == ["2026-10-01", "2026-12-31"] and data["sidecar"]["window"] == ["2026-10-01", "2026-11-24"]
    assert data["legacy"]["tables"]["users"] == "wp_users" and data["legacy"]["prefix_hard_coded"] is True
    csv_out = command("--level", str(CHILD), "--from", "2026-10-01", "--to", "2026-12-31", "--format", "csv")
    assert csv_out.exit_code == 0, csv_out.output
    lines = csv_out.output.splitlines()
    assert lines[0] == ",".join(legacy_compare.CSV_COLUMNS)
    assert "102,learner102@example.org,Имя102,,0,1,auto_certificate,sleeper,2026-11-01,2026-11-01,0" in lines
    assert len(lines) == 1 + len(EXPECTED)


def test_the_command_exits_4_when_a_difference_is_unexplained(command, monkeypatch):
    real = legacy_compare.live_sleepers
    monkeypatch.setattr(legacy_compare, "live_sleepers",
                        lambda *a, **k: [s for s in real(*a, **k) if s.user_id != 101])
    result = command("--level", str(CHILD), "--from", "2026-10-01", "--to", "2026-12-31")
    assert result.exit_code == 4, result.output
    assert "1 difference(s) without a known reason" in result.output
    assert f"mlsidecar explain --user <id> --level {CHILD} --format json" in result.output


@pytest.mark.parametrize("words, message", [
    (["--level", "999"], "no access level with id 999"),
    (["--level", str(CHILD), "--from", "2026-12-31", "--to", "2026-10-01"], "window ends on 2026-10-01, before it starts"),
    (["--level", str(CHILD), "--from", "31.12.2026"], "'31.12.2026' is not a calendar day written YYYY-MM-DD"),
    (["--level", str(CHILD), "--date", "2026-13-01"], "'2026-13-01' is not a calendar day"),
    (["--level", "x"], "'x' is not a valid integer"),
    (["--level", str(CHILD), "--timeout", "-1"], "-1.0 is not in the range x>=0"),
])
def test_the_command_refuses_bad_input_clearly(command, words, message):
    result = command(*words)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_the_command_reports_an_old_query_the_site_refuses(command, monkeypatch):
    from sidecar.memberlux import legacy_query

    monkeypatch.setattr(legacy_query, "legacy_v3_statements", lambda *a, **k: (
        sa.select(sa.func.count()).select_from(sa.table("wp_no_such_table")), sa.select(sa.literal(1))))
    result = command("--level", str(CHILD))
    assert result.exit_code == 1, result.output
    assert "the old report's query fails on this site: no such table: wp_no_such_table" in result.output


# ---------------------------------------------------------------------------------------------
# The documented reasons are the computed ones


def test_the_migration_guide_lists_exactly_the_computed_reasons():
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "migrating-from-legacy.md").read_text(encoding="utf-8")
    table = text.split("| Reason | Listed by | Why |", 1)[1].split("\n\n", 1)[0]
    assert re.findall(r"^\| `(\w+)` \|", table, re.M) == [reason.value for reason in legacy_compare.REASONS]


def test_every_reason_is_worded_in_both_languages():
    from sidecar.monitor.display import LEGACY_REASONS

    assert set(LEGACY_REASONS) == {reason.value for reason in legacy_compare.REASONS}
    for text in LEGACY_REASONS.values():
        assert text.format("en") and text.format("ru") != text.format("en")


def test_the_command_says_when_the_old_query_ran_past_its_time_limit(command, monkeypatch):
    def stopped(*args, **kwargs):
        assert kwargs["timeout"] == 30
        raise LegacyQueryTimeout("Query execution was interrupted (max_statement_time exceeded)")

    monkeypatch.setattr(legacy_compare, "compare", stopped)
    result = command("--level", str(CHILD), "--timeout", "30")
    assert result.exit_code == 1, result.output
    assert "the old report's query ran longer than 30 s and the database stopped it; give it more time with --timeout" \
        in result.output
