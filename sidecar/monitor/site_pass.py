"""Every level at once for a set of users: the unit both the full rebuild and the increments evaluate.

The rule (:func:`sidecar.domain.sleepers.evaluate`) looks at one user's rows of a level and of its
ancestor levels, the user's manual certificate and block flag. A user's rows are therefore all it
needs: reading the site once in ``user_id`` order and evaluating each user on every level they hold
rows of gives every level's sleepers in one pass (one streamed query instead of one per level, no
per-batch look-up of ancestor rows), and re-evaluating a handful of users after a change gives exactly
the rows a full rebuild would give them. That equality is what makes the increments safe
(tests/monitor/test_increments.py).

A whole-site pass puts a million rows through the rule, so it reads the rule through the rows' facts
(:func:`sidecar.domain.sleepers.evaluate_facts` over ``row_facts``, proved equal to ``evaluate`` by
tests/domain/test_sleepers.py), made straight from the packed text on MySQL/MariaDB.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections import Counter
import multiprocessing
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

import sqlalchemy as sa

from sidecar.domain.access import AccessPolicy, KeyRow
from sidecar.domain.sleepers import Reason, RowFacts, evaluate_facts, row_facts
from sidecar.memberlux import packed
from sidecar.memberlux.reader import MemberLuxReader, WpUser, _key_row, ancestors_from_parents
from sidecar.memberlux.schema import connect_wordpress, reflect_site

if TYPE_CHECKING:
    from sidecar.bootstrap import Runtime

__all__ = ["LevelTally", "SitePass", "UserSelection"]

#: Users whose names and flags are looked up together (one users query, one usermeta query).
USER_LOOKUP_BATCH = 2000
#: Processes sharing a whole-site pass on MySQL/MariaDB (at most one per core).
PROCESSES = 2
#: Rows fetched per round trip from the server-side cursor.
STREAM_CHUNK = 5000


@dataclass
class LevelTally:
    """What one pass found on one level. Sleeper tuples are
    ``(user_id, expired_on, last_grant, blocked, email, login, first, last)``; ``certified`` holds
    ``(user_id, expired_on, last_grant, blocked, email)`` of learners left out only for a manual
    certificate (their access ended all the same: ``access.expired`` announces them)."""

    sleepers: list[tuple] = field(default_factory=list)
    certified: list[tuple] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    rows_scanned: int = 0

    def stats(self) -> dict:
        considered = sum(n for reason, n in self.reasons.items() if reason != Reason.USER_DELETED.value)
        return {"rows_scanned": self.rows_scanned, "users_considered": considered,
                "sleepers": len(self.sleepers), "reasons": dict(sorted(self.reasons.items()))}


@dataclass(frozen=True)
class UserSelection:
    """Which users a pass reads: everybody, inclusive ``user_id`` ranges, and single users."""

    everybody: bool = False
    ranges: tuple[tuple[int, int], ...] = ()
    users: frozenset[int] = frozenset()

    @property
    def empty(self) -> bool:
        return not self.everybody and not self.ranges and not self.users


@dataclass(frozen=True)
class _RangeJob:
    """One process's share of a whole-site pass: the users with ``low <= user_id <= high``."""

    url: str
    prefix: str
    base_prefix: str
    policy: AccessPolicy
    check_ancestors: bool
    day: date
    parents: dict[int, int]
    manual: frozenset[tuple[int, int]]
    low: int
    high: int


def _parallelism() -> int:
    # The server packs while this machine evaluates; more processes than cores only queue.
    return max(1, min(PROCESSES, os.cpu_count() or 1))


class SitePass:
    """Reads key rows grouped by user and evaluates each user on every level they hold rows of."""

    def __init__(self, runtime: Runtime, *, check_ancestors: bool = True) -> None:
        self.runtime = runtime
        self.reader = runtime.reader
        self.check_ancestors = check_ancestors
        #: Users the last run evaluated (those holding key rows among the selected).
        self.users_evaluated = 0

    def run(self, day: date, parents: Mapping[int, int], selection: UserSelection,
            manual: Collection[tuple[int, int]]) -> dict[int, LevelTally]:
        """Tallies per existing level for the selected users on UTC day ``day``.

        ``manual`` holds the (user, level) pairs with a live manual certificate. Rows of levels that no
        longer exist are skipped (they open nothing and nobody sleeps in them). The whole site on
        MySQL/MariaDB is shared among processes by ranges of user ids (:data:`PROCESSES`, at most one per
        core): the rule in Python is what takes the time, and each process evaluates its own users.
        """
        parents = dict(parents)
        if selection.everybody and packed.supported(self.reader) and _parallelism() > 1:
            return self._run_in_processes(day, parents, manual)
        groups = self._grouped(selection)
        tallies, self.users_evaluated = evaluate_groups(
            groups, self._user_lookup(selection), day, parents, manual, self.check_ancestors)
        return tallies

    def _run_in_processes(self, day: date, parents: dict[int, int],
                          manual: Collection[tuple[int, int]]) -> dict[int, LevelTally]:
        keys = self.reader.schema.table("memberlux_term_keys")
        with self.reader.engine.connect() as conn:
            low, high = conn.execute(sa.select(sa.func.min(keys.c.user_id), sa.func.max(keys.c.user_id))).one()
        if low is None:
            self.users_evaluated = 0
            return {term_id: LevelTally() for term_id in parents}
        schema = self.reader.schema
        processes = _parallelism()
        step = (int(high) - int(low)) // processes + 1
        jobs = [_RangeJob(self.reader.engine.url.render_as_string(hide_password=False), schema.prefix,
                          schema.base_prefix, self.runtime.access_policy, self.check_ancestors, day, parents,
                          frozenset(manual), int(low) + i * step, min(int(high), int(low) + (i + 1) * step - 1))
                for i in range(processes)]
        # spawn, not fork: the worker has scheduler threads whose locks a fork would copy held.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=len(jobs) - 1, mp_context=context) as pool:
            others = [pool.submit(_evaluate_range, job) for job in jobs[1:]]
            results = [_evaluate_range(jobs[0])] + [future.result() for future in others]
        tallies = {term_id: LevelTally() for term_id in parents}
        self.users_evaluated = 0
        for part, users in results:
            self.users_evaluated += users
            for term_id, tally in part.items():
                merged = tallies[term_id]
                merged.sleepers.extend(tally.sleepers)
                merged.certified.extend(tally.certified)
                merged.reasons.update(tally.reasons)
                merged.rows_scanned += tally.rows_scanned
        return tallies

    # --- reading ---------------------------------------------------------------------------------------

    def _user_lookup(self, selection: UserSelection) -> Callable[[list[int]], dict[int, WpUser]]:
        """Users by id for ascending batches: the whole site's users streamed beside its keys when the
        pass reads everybody on MySQL/MariaDB, else a look-up per batch."""
        if not (selection.everybody and packed.supported(self.reader)):
            return self.reader.users
        stream, pending = packed.packed_users(self.reader), []
        return lambda ids: packed.merge_users(stream, ids, pending)

    def _grouped(self, selection: UserSelection) -> Iterator[tuple[int, list[RowFacts]]]:
        """``(user_id, facts of the user's rows)`` in user order, as the rule reads them (``row_facts``)."""
        policy = self.runtime.access_policy
        if packed.supported(self.reader):
            # Whole groups packed by the server: a tenth of the driver's work (sidecar.memberlux.packed).
            if selection.everybody:
                # Read ahead in a thread: the server packs and sends while this thread evaluates.
                yield from read_ahead(packed.packed_key_facts(self.reader, policy))
                return
            for low, high in selection.ranges:
                yield from packed.packed_key_facts(self.reader, policy, low=low, high=high)
            selection = UserSelection(users=selection.users)
        for rows in self._streams(selection):
            for user_id, group in itertools.groupby(rows, key=lambda r: r.user_id):
                if user_id is not None:
                    yield user_id, [row_facts(row, policy) for row in group]

    def _streams(self, selection: UserSelection) -> Iterator[Iterable[KeyRow]]:
        tk = self.reader.schema.table("memberlux_term_keys")
        if selection.everybody:
            yield self._stream(None)
            return
        for low, high in selection.ranges:
            yield self._stream(sa.and_(tk.c.user_id >= low, tk.c.user_id <= high))
        singles = sorted(selection.users)
        for start in range(0, len(singles), 500):
            yield self._stream(tk.c.user_id.in_(singles[start:start + 500]))

    def _stream(self, where: sa.ColumnElement[bool] | None) -> Iterator[KeyRow]:
        """Owned key rows in (user_id, id) order through a server-side cursor."""
        tk = self.reader.schema.table("memberlux_term_keys")
        stmt = self.reader._key_stmt()
        if where is not None:
            stmt = stmt.where(where)
        stmt = stmt.order_by(tk.c.user_id, tk.c.id)
        with self.reader.engine.connect() as conn:
            result = conn.execution_options(yield_per=STREAM_CHUNK).execute(stmt)
            for raw in result:
                yield _key_row(raw)


def evaluate_groups(groups: Iterator[tuple[int, list[RowFacts]]], lookup: Callable[[list[int]], dict[int, WpUser]],
                    day: date, parents: Mapping[int, int], manual: Collection[tuple[int, int]],
                    check_ancestors: bool) -> tuple[dict[int, LevelTally], int]:
    """The rule for every user of ``groups`` (``(user_id, facts of their rows)`` in user order, the facts taken
    under the site's policy) on every level they hold rows of; returns the tallies per existing level and the
    number of users evaluated."""
    ancestors = {term_id: ancestors_from_parents(parents, term_id) if check_ancestors else []
                 for term_id in parents}
    tallies: dict[int, LevelTally] = {term_id: LevelTally() for term_id in parents}
    evaluated = 0
    for batch in _batches(groups, USER_LOOKUP_BATCH):
        users = lookup([user_id for user_id, _ in batch])
        evaluated += len(batch)
        for user_id, facts in batch:
            _evaluate_user(user_id, facts, users.get(user_id), day, ancestors, tallies, manual, check_ancestors)
    return tallies, evaluated


def _evaluate_user(user_id: int, facts: list[RowFacts], user: WpUser | None, day: date,
                   ancestors: Mapping[int, list[int]], tallies: dict[int, LevelTally],
                   manual: Collection[tuple[int, int]], check_ancestors: bool) -> None:
    by_level: dict[int | None, list[RowFacts]] = {}
    for fact in facts:
        level_facts = by_level.get(fact[0])
        if level_facts is None:
            by_level[fact[0]] = [fact]
        else:
            level_facts.append(fact)
    for term_id, level_facts in by_level.items():
        tally = tallies.get(term_id)  # type: ignore[arg-type]
        if tally is None:
            continue  # a deleted level
        tally.rows_scanned += len(level_facts)
        if user is None:
            tally.reasons[Reason.USER_DELETED.value] += 1
            continue
        above = ancestors[term_id]  # type: ignore[index]
        reason, expired_on, last_grant = evaluate_facts(
            level_facts, day,
            ancestor_facts=[f for a in above for f in by_level.get(a, ())] if above else (),
            has_manual_certificate=(user_id, term_id) in manual,
            check_ancestors=check_ancestors,
        )
        tally.reasons[reason._value_] += 1  # the value itself: .value and hashing an Enum run Python code
        if reason is Reason.SLEEPER:
            tally.sleepers.append((user_id, expired_on, last_grant, user.blocked,
                                   user.email, user.login, user.first_name, user.last_name))
        elif reason is Reason.MANUAL_CERTIFICATE:
            tally.certified.append((user_id, expired_on, last_grant, user.blocked, user.email))


def _evaluate_range(job: _RangeJob) -> tuple[dict[int, LevelTally], int]:
    """One process's share: its own connection, the packed rows and users of its range of user ids."""
    engine = connect_wordpress(job.url)
    try:
        reader = MemberLuxReader(engine, reflect_site(engine, job.prefix, job.base_prefix))
        groups = read_ahead(packed.packed_key_facts(reader, job.policy, low=job.low, high=job.high))
        stream, pending = packed.packed_users(reader, low=job.low, high=job.high), []
        return evaluate_groups(groups, lambda ids: packed.merge_users(stream, ids, pending), job.day, job.parents,
                               job.manual, job.check_ancestors)
    finally:
        engine.dispose()


_DONE = object()


def read_ahead(items: Iterator, *, chunk: int = 500, depth: int = 8) -> Iterator:
    """``items`` produced by a background thread, ``chunk`` at a time, at most ``depth`` chunks ahead.

    The producer's exception is raised here; stopping early (``close()``) stops the producer, which
    then closes ``items`` in its own thread (releasing its database connection).
    """
    chunks: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            while not stop.is_set():
                block = list(itertools.islice(items, chunk))
                if not block:
                    break
                while not stop.is_set():
                    try:
                        chunks.put(block, timeout=0.2)
                        break
                    except queue.Full:
                        continue
            outcome: object = _DONE
        except Exception as exc:  # noqa: BLE001 - handed over to the consumer, which raises it
            outcome = exc
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        while not stop.is_set():
            try:
                chunks.put(outcome, timeout=0.2)
                return
            except queue.Full:
                continue

    producer = threading.Thread(target=produce, name="site-pass-read-ahead", daemon=True)
    producer.start()
    try:
        while True:
            block = chunks.get()
            if block is _DONE:
                return
            if isinstance(block, BaseException):
                raise block
            yield from block
    finally:
        stop.set()
        producer.join()


def _batches(groups: Iterator[tuple[int, list[RowFacts]]], size: int) -> Iterator[list[tuple[int, list[RowFacts]]]]:
    while True:
        batch = list(itertools.islice(groups, size))
        if not batch:
            return
        yield batch
