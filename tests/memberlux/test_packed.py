"""Packed reading (one row per user, grouped by MariaDB) returns exactly what the row-by-row reader
returns, odd values included; a group it cannot split safely is read again the ordinary way."""

from __future__ import annotations

import pytest

from sidecar.domain.access import AccessPolicy
from sidecar.domain.sleepers import row_facts
from sidecar.memberlux import packed
from tests.memberlux.test_reader import Site

pytestmark = pytest.mark.mariadb


@pytest.fixture
def site(mariadb_database):
    site = Site(mariadb_database)
    yield site
    site.close()


def _odd_site(site: Site) -> None:
    site.level(1)
    site.level(2, parent=1)
    site.user(1, first_name="Анна", last_name="O'Neil")
    site.user(2, wpm_status="inactive")
    site.user(3, first_name="tab\there", last_name="two\nlines")
    site.user(4, first_name="field\x1fsep", wpm_status=" inactive ")   # a separator inside a value
    site.user(5)
    site.insert("usermeta", user_id=5, meta_key="first_name", meta_value="first")
    site.insert("usermeta", user_id=5, meta_key="first_name", meta_value="second")   # the first row wins
    site.key(user_id=1)
    site.key(user_id=1, term_id=2, status=None, key_type=None, is_banned=None, is_unlimited=0, units="",
             duration=0, date_start="0000-00-00", date_end="0000-00-00", date_registered=None)
    site.key(user_id=2, status="weird", units="weeks", is_banned=3, is_unlimited=1, date_end="2031-02-03")
    site.key(user_id=3, key_type="wpm_keys_basket", status="expired\x1e")                # a record separator
    site.key(user_id=7)                                                                  # a deleted user
    key = site.key(user_id=5, date_start="2025-01-01", date_end="2025-02-01")
    site.insert("memberlux_keys_meta", key_id=key, activation_datetime="2025-01-01 08:30:00", source="purchase")
    zero = site.key(user_id=5, term_id=2)
    site.insert("memberlux_keys_meta", key_id=zero, activation_datetime="0000-00-00 00:00:00", source="admin")


def test_packed_key_groups_equal_the_reader_s_rows(site):
    _odd_site(site)
    reader = site.reader()
    groups = list(packed.packed_key_groups(reader))
    assert [user_id for user_id, _ in groups] == [1, 2, 3, 5, 7]
    for user_id, rows in groups:
        assert rows == reader.key_rows(user_id), user_id
    assert [u for u, _ in packed.packed_key_groups(reader, low=2, high=5)] == [2, 3, 5]


@pytest.mark.parametrize("include_basket", [True, False])
def test_packed_key_facts_equal_the_facts_of_the_reader_s_rows(site, include_basket):
    _odd_site(site)
    for user_id in (8, 9):                                          # stacked, banned, unlimited, aware times
        site.user(user_id)
        site.key(user_id=user_id, date_start="2025-01-01", date_end="2025-02-01", is_banned=user_id == 9)
        site.key(user_id=user_id, status="used", is_unlimited=1, date_start="2025-02-01", date_end="0000-00-00")
        site.key(user_id=user_id, term_id=2, key_type="wpm_keys_basket", status="used", is_banned=0, date_start="2025-03-01",
                 date_end="2025-01-01", date_registered=None)
        late = site.key(user_id=user_id, status="new", date_start="2025-04-01", date_end="2025-05-01")
        site.insert("memberlux_keys_meta", key_id=late, activation_datetime="2025-04-01 23:30:00", source="admin")
    reader = site.reader()
    policy = AccessPolicy(include_basket=include_basket)
    groups = list(packed.packed_key_facts(reader, policy))
    assert [user_id for user_id, _ in groups] == [1, 2, 3, 5, 7, 8, 9]
    for user_id, facts in groups:
        assert facts == [row_facts(row, policy) for row in reader.key_rows(user_id)], user_id
    assert [u for u, _ in packed.packed_key_facts(reader, policy, low=2, high=5)] == [2, 3, 5]


def test_packed_users_equal_the_reader_s_users(site):
    _odd_site(site)
    reader = site.reader()
    users = list(packed.packed_users(reader))
    assert [u.id for u in users] == [1, 2, 3, 4, 5]
    assert {u.id: u for u in users} == reader.users([1, 2, 3, 4, 5])
    by_id = {u.id: u for u in users}
    assert by_id[2].blocked and by_id[4].blocked and not by_id[1].blocked
    assert by_id[4].first_name == "field\x1fsep" and by_id[5].first_name == "first"


def test_merge_users_walks_both_streams_in_order(site):
    _odd_site(site)
    reader = site.reader()
    stream, pending = packed.packed_users(reader), []
    assert set(packed.merge_users(stream, [1, 3], pending)) == {1, 3}
    assert set(packed.merge_users(stream, [5, 7], pending)) == {5}     # 7 was deleted
    assert packed.merge_users(stream, [9], pending) == {}
