"""What happened after each letter: the dashboard's set-based computation gives the same numbers as a brute
force over the raw rows (keys, letters, certificates), on SQLite and on MariaDB; and a small site whose
answers are written out by hand."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from sidecar.dashboard import service
from sidecar.dashboard.outcomes import comparison_delays
from tests.dashboard.support import Certificate, Key, Letter, Site, brute_force, dashboard_figures, random_site
from tests.databases import fresh_database
from tests.reminders.school import LEVEL, OTHER_LEVEL

TODAY = date(2026, 11, 24)
DELAYS = (3, 10, 30)


def computed(site: Site, window: int):
    runtime = site.school.runtime
    levels = [lv.term_id for lv in runtime.reader.levels()]
    return service.after_letters(runtime, TODAY, window, levels, service.configured_delays(runtime, runtime.reader.levels()))


def a_school(school_factory, **urls) -> Site:
    school = school_factory(day=TODAY, **urls)
    school.schedule(DELAYS, admin_days=None)      # LEVEL has letters; OTHER_LEVEL has none
    return Site(school)


def test_a_hand_counted_site(school_factory):
    site = a_school(school_factory)
    x = TODAY - timedelta(days=60)                  # access ended 60 days ago on both levels
    for user in range(1, 9):
        site.learner(user)
    # Letters on LEVEL: learner 1 renews 5 days after letter 1; learner 2 gets a manual certificate 20 days
    # after it (outside 14 days, inside 30); learner 3 does nothing.
    for user in (1, 2, 3):
        site.key(Key(user, LEVEL, x - timedelta(days=30), x))
        site.letter(Letter(user, LEVEL, x, 1, x + timedelta(days=3)))
    site.key(Key(1, LEVEL, x + timedelta(days=8), x + timedelta(days=400)))   # renewals outlast the period
    site.certificate(Certificate(2, LEVEL, x + timedelta(days=23)))
    # No letters on OTHER_LEVEL: learner 4 renews on the would-be day of letter 1 (X + 3), learner 5
    # renewed the day after expiry (a sleeper on no letter day), learner 6 held a manual certificate
    # before (never a sleeper), learner 7 renews 12 days after the would-be letter 2, learner 8 nothing.
    for user in (4, 5, 6, 7, 8):
        site.key(Key(user, OTHER_LEVEL, x - timedelta(days=30), x))
    site.key(Key(4, OTHER_LEVEL, x + timedelta(days=3), x + timedelta(days=400)))
    site.key(Key(5, OTHER_LEVEL, x + timedelta(days=1), x + timedelta(days=400)))
    site.certificate(Certificate(6, OTHER_LEVEL, x - timedelta(days=100)))
    site.key(Key(7, OTHER_LEVEL, x + timedelta(days=22), x + timedelta(days=400)))

    after = dashboard_figures(computed(site, 14))
    assert after[(LEVEL, 1)] == ((3, 1, 0, 1), (0, 0, 0, 0))
    # Letter 1 of OTHER_LEVEL would go out on X + 3: learners 4, 7, 8 (learner 5 renewed before, 6 certified).
    assert after[(OTHER_LEVEL, 1)] == ((0, 0, 0, 0), (3, 1, 0, 1))
    # Letter 2 on X + 10: learners 7 and 8; 7 renews on X + 22, within 14 days.
    assert after[(OTHER_LEVEL, 2)] == ((0, 0, 0, 0), (2, 1, 0, 1))
    # Letter 3 on X + 30: learner 8 only (7 renewed before it).
    assert after[(OTHER_LEVEL, 3)] == ((0, 0, 0, 0), (1, 0, 0, 0))
    wider = dashboard_figures(computed(site, 30))
    assert wider[(LEVEL, 1)] == ((3, 1, 1, 2), (0, 0, 0, 0))
    # A 30-day window that has not ended yet is not measured: letter 3's day X + 30 is 30 days ago.
    assert wider[(OTHER_LEVEL, 3)] == ((0, 0, 0, 0), (0, 0, 0, 0))


def test_lapses_before_a_levels_first_letter_are_the_comparison(school_factory):
    site = a_school(school_factory)
    early, late = TODAY - timedelta(days=200), TODAY - timedelta(days=60)
    for user in (1, 2):
        site.learner(user)
    site.key(Key(1, LEVEL, early - timedelta(days=30), early))     # before the level's first letter
    site.key(Key(2, LEVEL, late - timedelta(days=30), late))
    site.letter(Letter(2, LEVEL, late, 1, late + timedelta(days=3)))
    after = dashboard_figures(computed(site, 14))
    assert after[(LEVEL, 1)] == ((1, 0, 0, 0), (1, 0, 0, 0))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
@pytest.mark.parametrize("window", [7, 14, 30])
def test_the_dashboard_agrees_with_brute_force_on_random_sites(school_factory, seed, window):
    site = a_school(school_factory)
    random_site(site, seed, TODAY, DELAYS)
    delays = comparison_delays({LEVEL: DELAYS, OTHER_LEVEL: (None, None, None)})
    expected = brute_force(site, TODAY, window, delays)
    assert sum(v[0][0] + v[1][0] for v in expected.values()) > 10, "the random site should measure something"
    assert dashboard_figures(computed(site, window)) == expected


@pytest.mark.mariadb
def test_the_dashboard_agrees_with_brute_force_on_mariadb(school_factory, mariadb_database, mariadb_admin_url):
    with fresh_database(mariadb_admin_url) as store_url:
        site = a_school(school_factory, site_url=mariadb_database, store_url=store_url)
        random_site(site, 5, TODAY, DELAYS)
        delays = comparison_delays({LEVEL: DELAYS, OTHER_LEVEL: (None, None, None)})
        expected = brute_force(site, TODAY, 14, delays)
        assert sum(v[0][0] + v[1][0] for v in expected.values()) > 10
        assert dashboard_figures(computed(site, 14)) == expected
        site.school.close()


def test_comparison_delays_take_the_levels_own_then_the_most_common():
    delays = comparison_delays({1: (3, 10, None), 2: (5, 10, None), 3: (5, None, None), 4: (None, None, None)})
    assert delays[1] == {1: 3, 2: 10}
    assert delays[2] == {1: 5, 2: 10}
    assert delays[3] == {1: 5, 2: 10}
    assert delays[4] == {1: 5, 2: 10}            # step 3: no level configures it, so no comparison
    assert comparison_delays({1: (3, None, None), 2: (7, None, None), 3: (None, None, None)})[3] == {1: 3}  # a tie: the shorter
