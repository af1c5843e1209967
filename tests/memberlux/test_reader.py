"""MemberLuxReader against real schemas (SQLite and MariaDB), with the odd data real sites hold.

Every test builds the site with a normal writable engine, inserts rows through it, then reads
through ``connect_wordpress`` (read-only) and ``reflect_site``.
"""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from tests.sites import empty_site_schema
from sidecar.domain.access import KeyRow
from sidecar.memberlux.reader import (
    CertificateRow,
    Level,
    MemberLuxReader,
    OrphanCounts,
    ancestors_from_parents,
)
from sidecar.memberlux.schema import FeatureUnavailable, connect_wordpress, reflect_site
from sidecar.memberlux.traces import TraceReader
from sidecar.memberlux.wpdata import WpDataError

_codes = itertools.count(1)


class Site:
    """A throwaway WordPress site: writable engine for fixtures, read-only reader for assertions."""

    def __init__(self, url: str, prefix: str = "wp_", base_prefix: str | None = None,
                 without_modules: tuple[str, ...] = ()) -> None:
        self.url, self.prefix, self.base = url, prefix, base_prefix or prefix
        self.engine = sa.create_engine(url)
        self.md = empty_site_schema(self.engine, prefix, base_prefix, without_modules=without_modules)
        self._read_engine: sa.Engine | None = None

    def table(self, short: str) -> sa.Table:
        base = short in ("users", "usermeta")
        return self.md.tables[(self.base if base else self.prefix) + short]

    def insert(self, short: str, **values) -> int:
        with self.engine.begin() as conn:
            if conn.dialect.name == "mysql":
                # Like WordPress: no strict or zero-date modes, so '0000-00-00' can be written.
                conn.exec_driver_sql("SET SESSION sql_mode = ''")
            result = conn.execute(self.table(short).insert().values(**values))
            pk = result.inserted_primary_key
            return pk[0] if pk else 0

    def execute(self, sql: str) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(sql)

    def user(self, user_id: int, login: str | None = None, email: str | None = None, **meta: str) -> int:
        login = login or f"user{user_id}"
        self.insert("users", ID=user_id, user_login=login, user_email=email or f"{login}@example.org",
                    display_name=login.title(), user_pass=f"$P$hash-of-{login}")
        for key, value in meta.items():
            self.insert("usermeta", user_id=user_id, meta_key=key, meta_value=value)
        return user_id

    def level(self, term_id: int, name: str | None = None, parent: int = 0, taxonomy: str = "wpm-levels") -> int:
        name = name or f"Level {term_id}"
        self.insert("terms", term_id=term_id, name=name, slug=f"level-{term_id}")
        self.insert("term_taxonomy", term_id=term_id, taxonomy=taxonomy, description="", parent=parent)
        return term_id

    def key(self, **values) -> int:
        row = {"key": f"CODE{next(_codes)}", "term_id": 1, "user_id": 1, "key_type": "wpm_term_keys", "status": "used",
                   "sent": 0, "is_banned": 0, "duration": 12, "units": "months", "date_start": "2024-01-10",
                   "date_end": "2025-01-10", "date_registered": "2024-01-10", "is_unlimited": 0}
        row.update(values)
        return self.insert("memberlux_term_keys", **row)

    def option(self, name: str, value: str) -> None:
        self.insert("options", option_name=name, option_value=value, autoload="no")

    def reader(self) -> MemberLuxReader:
        if self._read_engine is None:
            self._read_engine = connect_wordpress(self.url)
        return MemberLuxReader(self._read_engine, reflect_site(self._read_engine, self.prefix, self.base))

    def utm_keys(self, user_id: int, utm_id: str) -> list[int]:
        """Ids of the user's keys whose activation carried ``utm_id`` (how the bridge reads an order's trace)."""
        reader = self.reader()
        traces = TraceReader(reader.engine, reader.schema, timezone.utc)
        return [k.key_id for k in traces.keys(user_id, None, utm_id)]

    def close(self) -> None:
        self.engine.dispose()
        if self._read_engine is not None:
            self._read_engine.dispose()


@pytest.fixture
def make_site(site_db_url):
    sites: list[Site] = []

    def _make(**kwargs) -> Site:
        site = Site(site_db_url, **kwargs)
        sites.append(site)
        return site

    yield _make
    for site in sites:
        site.close()


@pytest.fixture
def site(make_site) -> Site:
    s = make_site()
    s.user(1)
    s.level(1)
    return s


# --- key rows ---------------------------------------------------------------------------------------


def test_key_row_with_activation_time(site):
    key_id = site.key(date_start="2024-03-01", date_end="2024-04-01", date_registered="2024-02-28")
    site.insert("memberlux_keys_meta", key_id=key_id, activation_datetime="2024-02-28 10:11:12", source="purchase")
    (row,) = site.reader().key_rows(1)
    assert row == KeyRow(
        key_id=key_id, user_id=1, term_id=1, status="used", key_type="wpm_term_keys", is_banned=False,
        is_unlimited=False, duration=12, units="months", date_start=date(2024, 3, 1),
        date_end=date(2024, 4, 1), date_registered=date(2024, 2, 28),
        activated_at=datetime(2024, 2, 28, 10, 11, 12),
    )


def test_zero_dates_mixed_with_real_dates_in_one_column(site):
    real = site.key(date_start="2024-01-10", date_end="2024-02-10")
    zero = site.key(date_start="0000-00-00", date_end="0000-00-00", date_registered="0000-00-00")
    site.insert("memberlux_keys_meta", key_id=zero, activation_datetime="0000-00-00 00:00:00")
    rows = {r.key_id: r for r in site.reader().key_rows(1)}
    assert (rows[real].date_start, rows[real].date_end) == (date(2024, 1, 10), date(2024, 2, 10))
    assert (rows[zero].date_start, rows[zero].date_end, rows[zero].date_registered) == (None, None, None)
    assert rows[zero].activated_at is None


def test_null_dates_and_missing_keys_meta(site):
    key_id = site.key(date_registered=None)  # registration path leaves it NULL
    (row,) = site.reader().key_rows(1)
    assert row.key_id == key_id
    assert row.date_registered is None
    assert row.activated_at is None  # activated before keys_meta existed
    assert row.date_start == date(2024, 1, 10)


def test_unlimited_key_keeps_meaningless_end_date(site):
    site.key(is_unlimited=1, duration=0, date_start="2024-01-10", date_end="2024-01-10")
    (row,) = site.reader().key_rows(1)
    assert row.is_unlimited is True
    assert row.date_end == date(2024, 1, 10)  # returned as stored; the domain ignores it


def test_banned_keys_and_null_flags(site):
    banned = site.key(is_banned=1)
    null_flag = site.key(is_banned=None, sent=None)
    rows = {r.key_id: r for r in site.reader().key_rows(1)}
    assert rows[banned].is_banned is True
    assert rows[null_flag].is_banned is False


def test_basket_keys_and_null_key_type(site):
    basket = site.key(key_type="wpm_keys_basket")
    null_type = site.key(key_type=None)
    rows = {r.key_id: r for r in site.reader().key_rows(1)}
    assert rows[basket].key_type == "wpm_keys_basket"
    assert rows[null_type].key_type == "wpm_term_keys"


def test_never_activated_keys_with_placeholder_dates(site):
    placeholder = f"{date.today().year + 10}-01-01"
    site.key(user_id=None, status="new", date_start=placeholder, date_end=placeholder, date_registered=None)
    site.key(user_id=None, status="new", date_start="0000-00-00", date_end="0000-00-00", date_registered=None)
    sent_to_user = site.key(status="new", sent=1, date_start=placeholder, date_end=placeholder, date_registered=None)
    reader = site.reader()
    rows = reader.key_rows(1)
    # Rows without an owner are never returned; an owned 'new' row comes back untouched.
    assert [r.key_id for r in rows] == [sent_to_user]
    assert rows[0].status == "new"
    assert rows[0].date_start == date(date.today().year + 10, 1, 1)
    assert [r.key_id for r in reader.key_rows_for_level(1)] == [sent_to_user]
    assert reader.count_rows("memberlux_term_keys") == 3


def test_stale_and_odd_status_and_units_are_normalised(site):
    today = date.today()
    stale = site.key(status="expired", date_start=str(today - timedelta(days=5)),
                     date_end=str(today + timedelta(days=25)))
    null_status = site.key(status=None)
    odd_units = site.key(units="weeks", duration=3)
    days = site.key(units="days", duration=30)
    rows = {r.key_id: r for r in site.reader().key_rows(1)}
    assert rows[stale].status == "expired"  # as stored: the domain decides from dates
    assert rows[null_status].status == "new"
    assert rows[odd_units].units == "months"
    assert (rows[days].units, rows[days].duration) == ("days", 30)


def test_key_rows_filtered_by_levels(site):
    site.level(2)
    site.key(term_id=1)
    second = site.key(term_id=2)
    reader = site.reader()
    assert [r.key_id for r in reader.key_rows(1, term_ids=[2])] == [second]
    assert reader.key_rows(1, term_ids=[]) == []
    assert len(reader.key_rows(1)) == 2


def test_key_rows_for_level_streams_all_users_grouped(site):
    site.user(2)
    site.user(3)
    ids = [site.key(user_id=3), site.key(user_id=2), site.key(user_id=3), site.key(user_id=2)]
    site.key(user_id=2, term_id=99)  # another level
    stream = site.reader().key_rows_for_level(1, chunk_size=2)
    rows = list(stream)
    assert [(r.user_id, r.key_id) for r in rows] == sorted((r.user_id, r.key_id) for r in rows)
    assert {r.key_id for r in rows} == set(ids)


def test_key_rows_without_is_unlimited_column(site):
    site.key()
    site.execute("ALTER TABLE wp_memberlux_term_keys DROP COLUMN is_unlimited")
    (row,) = site.reader().key_rows(1)
    assert row.is_unlimited is False


def test_keys_by_utm_id(site):
    first, second, other = site.key(), site.key(), site.key()
    long_id = "grant-" + "x" * 70
    site.insert("memberlux_keys_meta", key_id=first, activation_datetime="2024-01-10 00:00:00", utm_id="g-42")
    site.insert("memberlux_keys_meta", key_id=second, activation_datetime="2024-01-10 00:00:00", utm_id="g-42")
    # MemberLux stores at most 60 characters; the look-up truncates the same way.
    site.insert("memberlux_keys_meta", key_id=other, activation_datetime="2024-01-10 00:00:00", utm_id=long_id[:60])
    assert site.utm_keys(1, "g-42") == [first, second]
    assert site.utm_keys(1, long_id) == [other]
    assert site.utm_keys(1, "g-43") == []


def test_owned_keys_in_an_id_range_of_every_level(site):
    site.level(2)
    first = site.key()
    unused = site.key(user_id=None, status="new", date_start="0000-00-00", date_end="0000-00-00", date_registered=None)
    other_level = site.key(term_id=2)
    later = site.key()
    reader = site.reader()
    assert [r.key_id for r in reader.owned_keys_between(0, later)] == [first, other_level, later]
    assert [r.key_id for r in reader.owned_keys_between(first, other_level)] == [other_level]
    assert [r.key_id for r in reader.owned_keys_between(0, later, limit=1)] == [first]
    assert unused not in [r.key_id for r in reader.owned_keys_between(0, later)]


def test_activated_keys_by_start_day_leave_out_unused_codes_and_their_placeholder_dates(site):
    started = site.key(date_start="2026-11-24", date_end="2026-12-24")
    stacked = site.key(date_start="2027-03-01", date_end="2027-04-01", status="expired")
    site.key(date_start="2026-11-01", date_end="2026-12-01")                          # before the range
    site.key(user_id=None, status="new", date_start="2026-11-24", date_end="2026-11-24", date_registered=None)
    site.key(user_id=None, status="new", date_start="2036-01-01", date_end="2036-01-01", date_registered=None)
    site.key(user_id=None, status="new", date_start="0000-00-00", date_end="0000-00-00", date_registered=None)
    reader = site.reader()
    rows = reader.activated_keys_starting_in([(date(2026, 11, 23), date(2026, 11, 30)), (date(2027, 1, 2), date(2029, 11, 24))])
    assert [r.key_id for r in rows] == [started, stacked]
    assert [r.key_id for r in reader.activated_keys_starting_in([(date(2027, 1, 2), date(2027, 12, 31))])] == [stacked]
    assert reader.activated_keys_starting_in([]) == []


def test_activation_sources_tell_core_s_write_from_the_auto_responder_s(site):
    by_core, by_responder, without_meta, empty = site.key(), site.key(), site.key(), site.key()
    site.insert("memberlux_keys_meta", key_id=by_core, activation_datetime="2026-11-24 10:00:00", source="activation_page")
    site.insert("memberlux_keys_meta", key_id=by_responder, activation_datetime="2026-11-24 13:00:00")
    site.insert("memberlux_keys_meta", key_id=empty, activation_datetime="2026-11-24 10:00:00", source="")
    sources = site.reader().activation_sources([by_core, by_responder, without_meta, empty])
    assert sources == {by_core: "activation_page", by_responder: None, empty: ""}
    assert site.reader().activation_sources([]) == {}


# --- orphans ----------------------------------------------------------------------------------------


def test_orphan_rows_do_not_crash(site):
    gone_user = site.key(user_id=77)
    gone_level = site.key(term_id=88)
    fine = site.key()
    reader = site.reader()
    assert reader.user(77) is None
    assert reader.level(88) is None
    assert [r.key_id for r in reader.key_rows(77)] == [gone_user]
    rows = {r.key_id: r for r in reader.key_rows(1)}
    assert reader.is_orphan(rows[gone_level]) is True
    assert reader.is_orphan(rows[fine]) is False
    assert reader.is_orphan(reader.key_rows(77)[0]) is True
    assert reader.count_orphan_keys() == OrphanCounts(missing_user=1, missing_level=1)
    assert reader.users([1, 77]).keys() == {1}
    assert reader.existing_level_ids([1, 88]) == {1}


def test_orphan_certificates_do_not_crash(site):
    site.insert("memberlux_certificate", user_id=55, wpmlevel_id=66, certificate_name="Gone", certificate_template_id=1,
                date_issue="2024-01-01", series="S", number="00055", create_date="2024-01-01")
    reader = site.reader()
    (cert,) = reader.certificates_after(0)
    assert (cert.user_id, cert.level_id) == (55, 66)
    assert reader.user(cert.user_id) is None and reader.level(cert.level_id) is None


# --- users --------------------------------------------------------------------------------------------


def test_user_with_names_and_blocked_status(make_site):
    site = make_site()
    site.user(1, first_name="Anna", last_name="Ivanova", wpm_status="inactive")
    site.user(2, wpm_status="active")
    site.user(3)
    reader = site.reader()
    anna = reader.user(1)
    assert (anna.first_name, anna.last_name, anna.blocked) == ("Anna", "Ivanova", True)
    assert anna.login == "user1" and anna.display_name == "User1"
    assert reader.user(2).blocked is False
    assert reader.user(3).blocked is False
    assert (reader.user(3).first_name, reader.user(3).last_name) == ("", "")


def test_user_queries_never_select_passwords(make_site):
    site = make_site()
    site.user(1, email="a@example.org")
    reader = site.reader()
    statements: list[str] = []
    sa.event.listen(reader.engine, "before_cursor_execute",
                    lambda conn, cursor, statement, *args: statements.append(statement))
    reader.user(1)
    reader.users([1])
    reader.user_by_email("a@example.org")
    reader.key_rows(1)
    assert statements and all("user_pass" not in s for s in statements)
    assert all("auto_auth" not in s for s in statements)


def test_password_hash_for_login_by_login_then_email(make_site):
    site = make_site()
    site.user(1, login="admin", email="boss@example.org")
    site.user(2, login="other@example.org", email="other-real@example.org")
    reader = site.reader()
    record = reader.password_hash_for_login("ADMIN")
    assert (record.user_id, record.login, record.password_hash) == (1, "admin", "$P$hash-of-admin")
    assert "hash-of" not in repr(record)
    assert reader.password_hash_for_login("Boss@Example.org").user_id == 1
    assert reader.password_hash_for_login("other@example.org").user_id == 2  # login wins over e-mail
    assert reader.password_hash_for_login("nobody") is None
    assert reader.password_hash_for_login(" ") is None


def test_user_roles_from_capabilities(make_site):
    site = make_site()
    site.user(1, wp_capabilities='a:1:{s:13:"administrator";b:1;}')
    site.user(2, wp_capabilities="broken")
    site.user(3)
    reader = site.reader()
    assert reader.user_roles(1) == {"administrator"}
    assert reader.user_roles(1, "wp_") == {"administrator"}
    assert reader.user_roles(2) == set()
    assert reader.user_roles(3) == set()


def test_mixed_utf8mb3_and_utf8mb4_tables(make_site):
    site = make_site()
    if site.engine.dialect.name == "mysql":
        with site.engine.connect() as conn:
            charsets = dict(conn.exec_driver_sql(
                "SELECT TABLE_NAME, TABLE_COLLATION FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ('wp_users', 'wp_memberlux_term_keys')").all())
        assert charsets["wp_users"].startswith("utf8mb4")
        assert charsets["wp_memberlux_term_keys"].startswith("utf8mb3")
    site.level(1, name="Курс 🚀")
    site.user(10, login="petr", email="Пётр.😀@пример.рф", first_name="Пётр")
    site.user(11, login="petr2", email="Петр.😀@пример.рф")  # equal to the first under accent-blind collations
    site.user(12, login="petr3", email="Пётр.😁@пример.рф")  # another emoji
    key_id = site.key(user_id=10)
    site.insert("memberlux_keys_meta", key_id=key_id, activation_datetime="2024-01-10 00:00:00", utm_id="ё-1")
    reader = site.reader()
    found = reader.user_by_email("ПЁТР.😀@ПРИМЕР.РФ")
    assert found is not None and found.id == 10 and found.first_name == "Пётр"
    assert reader.user_by_email("петр.😀@пример.рф").id == 11
    assert reader.user_by_email("пётр.😁@пример.рф").id == 12
    # The id-only look-up (the grant worker's) finds the same users.
    assert [reader.user_id_by_email(e) for e in ("ПЁТР.😀@ПРИМЕР.РФ", "петр.😀@пример.рф", "пётр.😁@пример.рф")] == [10, 11, 12]
    assert [r.key_id for r in reader.key_rows(found.id)] == [key_id]
    assert reader.levels()[0].name == "Курс 🚀"
    assert site.utm_keys(10, "Ё-1") == [key_id] or site.engine.dialect.name == "sqlite"
    # A utf8mb3 column cannot hold emoji; MySQL would even refuse the comparison.
    assert site.utm_keys(10, "😀") == []
    assert reader.password_hash_for_login("😀") is None
    assert reader.count_orphan_keys() == OrphanCounts(0, 0)  # integer joins across charsets


@pytest.mark.mariadb
def test_emoji_lookup_in_keys_meta_created_as_utf8mb4(mariadb_database):
    # The auto-responder creates keys_meta with the site's default charset when it runs first.
    site = Site(mariadb_database)
    try:
        site.user(1)
        site.level(1)
        key_id = site.key()
        site.execute("ALTER TABLE wp_memberlux_keys_meta CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci")
        site.insert("memberlux_keys_meta", key_id=key_id, activation_datetime="2024-01-10 00:00:00", utm_id="😀")
        assert site.utm_keys(1, "😀") == [key_id]
    finally:
        site.close()


def test_users_are_found_by_login_and_by_any_part_of_login_e_mail_or_name(make_site):
    site = make_site()
    site.user(1, "anna_p", "anna@school.example", first_name="Анна", last_name="Петрова")
    site.user(2, "boris", "b.petrov@mail.example", first_name="Борис", last_name="Петров")
    site.user(3, "carla_100%", "carla@example.org", first_name="Carla", last_name="Smith")
    reader = site.reader()
    assert reader.user_by_login(" ANNA_P ").id == 1 and reader.user_by_login("anna") is None
    assert reader.user_by_login("") is None
    assert [u.id for u in reader.find_users("петров")] == [1, 2]        # last names, any case
    assert [u.id for u in reader.find_users("PETROV")] == [2]           # the e-mail
    assert [u.id for u in reader.find_users("anna")] == [1]
    assert [u.id for u in reader.find_users("0%")] == [3]               # LIKE wildcards are literal text
    assert [u.id for u in reader.find_users("_")] == [1, 3]
    assert [u.id for u in reader.find_users("a", limit=2)] == [1, 2]
    assert reader.find_users("   ") == [] and reader.find_users("nobody") == []


def test_learners_who_unsubscribed_from_memberlux_letters(make_site):
    site = make_site()
    for user_id, term_id, status in ((1, 5, "unsubscribe"), (1, 6, "unsubscribe"), (2, 5, "finish"),
                                     (3, 5, "processing"), (4, 6, "unsubscribe")):
        site.insert("memberlux_user_mailing_list", user_id=user_id, term_id=term_id, status=status,
                    mailing_datetime="2026-01-05 10:00:00", datetime_start="2026-01-05 13:00:00")
    reader = site.reader()
    assert reader.mailing_unsubscribed_ids() == {1, 4}
    assert reader.mailing_unsubscribed_ids([1, 2, 3]) == {1} and reader.mailing_unsubscribed_ids([]) == set()


def test_a_site_without_the_auto_responder_has_no_such_learners(make_site):
    assert make_site(without_modules=("auto_responder",)).reader().mailing_unsubscribed_ids() == set()


def test_user_by_email_unknown_or_empty(site):
    reader = site.reader()
    assert reader.user_by_email("nobody@example.org") is None
    assert reader.user_by_email("   ") is None
    assert reader.user_by_email(" USER1@example.org ").id == 1
    assert reader.user_id_by_email("nobody@example.org") is None
    assert reader.user_id_by_email("   ") is None
    assert reader.user_id_by_email(" USER1@example.org ") == 1


def test_user_id_by_email_is_the_lowest_id_of_the_same_address_in_any_case(make_site):
    site = make_site()
    site.user(5, email="Twice@Example.org")
    site.user(3, email="twice@example.ORG")
    site.user(4, email="twice.not@example.org")
    reader = site.reader()
    assert reader.user_id_by_email("TWICE@example.org") == reader.user_by_email("TWICE@example.org").id == 3


# --- levels -------------------------------------------------------------------------------------------


def test_levels_and_hierarchy(make_site):
    site = make_site()
    site.level(1, "Root")
    site.level(2, "Child", parent=1)
    site.level(3, "Grandchild", parent=2)
    site.level(9, "A category", taxonomy="wpm-category")  # not a level
    reader = site.reader()
    assert {lvl.term_id for lvl in reader.levels()} == {1, 2, 3}
    assert reader.level(2) == Level(2, "Child", "level-2", 1)
    assert reader.level(9) is None
    assert reader.ancestors(3) == [2, 1]
    assert reader.ancestors(1) == []
    assert reader.ancestors(404) == []


def test_level_hierarchy_cycle_is_cut(make_site):
    site = make_site()
    site.level(1, parent=3)
    site.level(2, parent=1)
    site.level(3, parent=2)
    site.level(4, parent=4)
    reader = site.reader()
    assert reader.ancestors(3) == [2, 1]
    assert reader.ancestors(4) == []


def test_ancestors_stop_at_a_deleted_parent():
    assert ancestors_from_parents({5: 4, 4: 99}, 5) == [4]


def test_level_meta_first_value_wins(site):
    site.insert("termmeta", term_id=1, meta_key="_mblc_how_to_issue", meta_value="auto")
    site.insert("termmeta", term_id=1, meta_key="_mblc_how_to_issue", meta_value="employee")
    site.insert("termmeta", term_id=1, meta_key="_mblc_course_name", meta_value=None)
    site.insert("termmeta", term_id=2, meta_key="_mblc_how_to_issue", meta_value="employee")
    assert site.reader().level_meta(1) == {"_mblc_how_to_issue": "auto", "_mblc_course_name": ""}


# --- options, time zone, serialized values -------------------------------------------------------


def test_options_raw_and_unserialized(site):
    site.option("wpm_main_options", 'a:1:{s:4:"mblp";a:1:{s:15:"auto_activation";s:2:"on";}}')
    site.option("blogname", "Школа")
    site.option("broken", 'a:1:{s:99:"wrong length";}')
    site.option("cut", 'a:1:{s:9:"truncated')
    reader = site.reader()
    assert reader.option("blogname") == "Школа"
    assert reader.option("missing") is None
    assert reader.option("missing", "fallback") == "fallback"
    assert reader.option("wpm_main_options", unserialize=True)["mblp"]["auto_activation"] == "on"
    assert reader.option("wpm_main_options").startswith("a:1:")
    assert reader.options(["blogname", "missing"]) == {"blogname": "Школа"}
    with pytest.raises(WpDataError):
        reader.option("broken", unserialize=True)
    # Does not look serialized (WordPress's is_serialized), so it comes back as the plain string.
    assert reader.option("cut", unserialize=True) == 'a:1:{s:9:"truncated'


@pytest.mark.parametrize(
    "tz_string, offset, expected_offset, source, warns",
    [
        ("Europe/Moscow", "0", timedelta(hours=3), "timezone_string", False),
        ("", "5.5", timedelta(hours=5, minutes=30), "gmt_offset", False),
        ("", "", timedelta(0), "default", False),
        ("", "garbage", timedelta(0), "default", True),
    ],
)
def test_site_timezone_from_options(site, tz_string, offset, expected_offset, source, warns):
    site.option("timezone_string", tz_string)
    site.option("gmt_offset", offset)
    result = site.reader().site_timezone()
    assert result.tz.utcoffset(datetime(2024, 6, 1)) == expected_offset
    assert result.source == source
    assert (result.warning is not None) is warns
    if source == "timezone_string":
        assert result.tz == ZoneInfo("Europe/Moscow")


def test_site_timezone_without_options_is_utc(site):
    assert site.reader().site_timezone().tz == timezone.utc


# --- certificates ------------------------------------------------------------------------------------


def _certificate(site: Site, **values) -> int:
    row = {"user_id": 1, "wpmlevel_id": 1, "certificate_name": "Course", "certificate_template_id": 3,
               "graduate_first_name": "Anna", "graduate_last_name": "Ivanova", "graduate_surname": "Petrovna",
               "date_issue": "2024-05-01", "series": "AB", "number": "00001", "responsible_person": 0,
               "create_date": "2024-05-01", "course_name": "Course",
               "custom_fields": 'a:2:{s:6:"field1";s:3:"one";s:6:"field2";s:0:"";}'}
    row.update(values)
    return site.insert("memberlux_certificate", **row)


def test_certificates_incremental_scan(site):
    reader = site.reader()
    assert reader.latest_certificate_id() is None
    first = _certificate(site)
    second = _certificate(site, date_issue="0000-00-00", custom_fields="not-serialized-garbage")
    third = _certificate(site, custom_fields='a:1:{s:6:"field1";s:99:"broken";}', responsible_person=None)
    assert reader.latest_certificate_id() == third
    rows = reader.certificates_after(0, limit=2)
    assert [c.certificate_id for c in rows] == [first, second]
    assert rows[0] == CertificateRow(
        certificate_id=first, user_id=1, level_id=1, certificate_name="Course", template_id=3,
        graduate_first_name="Anna", graduate_last_name="Ivanova", graduate_surname="Petrovna",
        date_issue=date(2024, 5, 1), create_date=date(2024, 5, 1), series="AB", number="00001",
        responsible_person=0, course_name="Course", custom_fields={"field1": "one", "field2": ""},
    )
    assert rows[1].date_issue is None and rows[1].custom_fields == {}
    (last,) = reader.certificates_after(second, limit=10)
    assert (last.certificate_id, last.custom_fields, last.responsible_person) == (third, {}, None)


def test_certificates_unavailable_without_module(make_site):
    site = make_site(without_modules=("certificates",))
    reader = site.reader()
    with pytest.raises(FeatureUnavailable, match="Certificates module"):
        reader.latest_certificate_id()
    with pytest.raises(FeatureUnavailable):
        reader.certificates_after(0)
    with pytest.raises(FeatureUnavailable):
        reader.count_rows("memberlux_certificate")


# --- prefixes -----------------------------------------------------------------------------------------


def test_custom_prefix_reader(make_site):
    site = make_site(prefix="wpx_")
    site.user(1, wpx_capabilities='a:1:{s:8:"customer";b:1;}')
    site.level(1)
    key_id = site.key()
    site.option("gmt_offset", "3")
    reader = site.reader()
    assert [r.key_id for r in reader.key_rows(1)] == [key_id]
    assert reader.user_roles(1) == {"customer"}
    assert reader.site_timezone().source == "gmt_offset"


def test_multisite_reader_uses_base_users_and_site_tables(make_site):
    site = make_site(prefix="wp_3_", base_prefix="wp_")
    site.user(1, wp_capabilities='a:1:{s:13:"administrator";b:1;}', wp_3_capabilities='a:1:{s:8:"customer";b:1;}')
    site.level(1)
    key_id = site.key()
    site.option("timezone_string", "Asia/Yekaterinburg")
    reader = site.reader()
    assert reader.user(1).login == "user1"
    assert [r.key_id for r in reader.key_rows(1)] == [key_id]
    assert reader.user_roles(1) == {"customer"}  # this sub-site's roles
    assert reader.user_roles(1, "wp_") == {"administrator"}  # the main site's
    assert reader.site_timezone().tz == ZoneInfo("Asia/Yekaterinburg")
