"""The worker's ``dashboard.after_letters`` job: "what happened after each letter" computed ahead of the page.

The comparison reads a year of key rows (half a minute on a site with a million keys), so no web request
computes it: this job, every ``schedule.dashboard_interval_minutes`` and when the worker starts, computes
it for every outcome window and every level and replaces one row per window in our store
(:mod:`sidecar.dashboard.snapshots`); the page reads the row of its window and shows one level's part of
it or the sum over all levels.
"""

from __future__ import annotations

import time
from datetime import date

from sidecar.bootstrap import Runtime
from sidecar.dashboard import outcomes, service, snapshots
from sidecar.domain.letter_outcomes import WINDOW_CHOICES
from sidecar.store.db import unit_of_work


def compute(runtime: Runtime, today: date) -> tuple[dict[int, outcomes.AfterLetters], float]:
    """Every window's comparison for all levels as of the UTC day ``today``, and the seconds it took."""
    began = time.perf_counter()
    levels = runtime.reader.levels()
    results = service.after_letters_windows(runtime, today, WINDOW_CHOICES,
                                            [lv.term_id for lv in levels], service.configured_delays(runtime, levels))
    return results, time.perf_counter() - began


def compute_job(runtime: Runtime) -> str:
    """The worker's job: compute and store every window; its outcome line says what it measured."""
    today = runtime.clock.today_utc()
    results, seconds = compute(runtime, today)
    with unit_of_work(runtime.sessions) as session:
        snapshots.save(session, today, results, runtime.clock.now(), seconds)
    measured = {window: sum(row.letters.learners for row in after.total()) for window, after in results.items()}
    return (f"{len(next(iter(results.values())).by_level)} level(s) in {seconds:.1f} s; letters measured per window: "
            + ", ".join(f"{window} days {count}" for window, count in measured.items()))
