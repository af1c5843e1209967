"""Shared commits of the grant intake (sidecar/bridge/intake_writer.py), attacked at each gap.

Every test holds the first transaction open (inside its INSERT of the grant) until the requests under
test have queued behind it, so what shares the next commit is decided by the test, not by timing. On
a SQLite store and on MariaDB.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from sidecar.bridge import intake_writer
from sidecar.bridge.auth import Principal
from sidecar.bridge.parsers import parse_grant_body
from sidecar.bridge.service import Acceptance, BridgeService, IntakeContext
from sidecar.store.grant_models import Grant
from sidecar.store.models import AuditEvent
from tests.bridge.support import brief_body, new_email

CONTEXT = IntakeContext(channel="api", principal=Principal("api_key", "crm"))


@pytest.fixture
def service(store_section, make_bridge) -> BridgeService:
    built = BridgeService(make_bridge(store=store_section).runtime)
    built.commits = []                                   # sizes of the committed batches, in order
    built.writer.on_commit = built.commits.append
    return built


class HeldCommit:
    """Once armed, blocks the first INSERT of a grant until ``release`` (its transaction stays open)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.entered = threading.Event()
        self.released = threading.Event()
        #: The start of a statement to fail once in the transaction after the held one.
        self.fail_next: str | None = None
        self.committed = 0
        self.armed = False
        sa.event.listen(engine, "before_cursor_execute", self._before)
        sa.event.listen(engine, "commit", self._commit)

    def _commit(self, _conn) -> None:
        self.committed += 1

    def _before(self, _conn, _cursor, statement: str, *_args) -> None:
        if not self.armed:
            return
        if statement.startswith("INSERT INTO mls_grants") and not self.entered.is_set():
            self.entered.set()
            assert self.released.wait(30), "the held commit was never released"
        elif self.fail_next and self.committed and statement.startswith(self.fail_next):
            self.fail_next = None
            raise OperationalError(statement, {}, Exception("lost connection to the store"))

    def arm(self) -> None:
        self.armed, self.committed = True, 0

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        sa.event.remove(self.engine, "before_cursor_execute", self._before)
        sa.event.remove(self.engine, "commit", self._commit)


def accept_in_threads(service: BridgeService, bodies: list[dict], held: HeldCommit
                      ) -> tuple[dict[int, Acceptance], dict[int, BaseException]]:
    """Post ``bodies[0]`` (it leads and is held), then the others, which queue; release once all of
    them wait in the writer's queue. Returns each request's acceptance or error by its index."""
    results: dict[int, Acceptance] = {}
    errors: dict[int, BaseException] = {}

    def post(index: int) -> None:
        try:
            results[index] = service.accept(parse_grant_body(bodies[index]), CONTEXT)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors[index] = exc

    held.arm()
    threads = [threading.Thread(target=post, args=(0,))]
    threads[0].start()
    assert held.entered.wait(30)
    for index in range(1, len(bodies)):
        threads.append(threading.Thread(target=post, args=(index,)))
        threads[-1].start()
    _until(lambda: len(service.writer._queue) == len(bodies) - 1)
    held.release()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a request never got its answer"
    return results, errors


def _until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the requests did not queue"
        time.sleep(0.005)


def stored(service: BridgeService) -> tuple[list[Grant], list[AuditEvent]]:
    with service.runtime.sessions() as session:
        return (list(session.scalars(sa.select(Grant).order_by(Grant.created_at, Grant.id))),
                list(session.scalars(sa.select(AuditEvent).where(AuditEvent.subject_type == "grant"))))


@pytest.fixture
def held(service):
    hold = HeldCommit(service.runtime.store_engine)
    yield hold
    hold.close()


def test_requests_arriving_during_a_commit_share_the_next_one_and_each_gets_its_own_grant(service, held):
    bodies = [brief_body(new_email(f"share{n}"), external_id=f"deal-share-{n}") for n in range(6)]
    results, errors = accept_in_threads(service, bodies, held)
    assert errors == {}
    assert service.commits == [1, 5]
    assert all(not results[n].replayed for n in range(6))
    assert [results[n].grant.external_id for n in range(6)] == [f"deal-share-{n}" for n in range(6)]
    grants, events = stored(service)
    assert sorted(g.external_id for g in grants) == sorted(f"deal-share-{n}" for n in range(6))
    assert {results[n].grant.id for n in range(6)} == {g.id for g in grants}
    # Every grant with its whole audit trail, none with another's.
    for grant in grants:
        assert sorted(e.action for e in events if e.subject_id == grant.id) == [
            "intake.product_chosen", "intake.received", "intake.validated"]


def test_a_deal_sent_twice_within_one_commit_is_stored_once_and_the_copy_answers_as_a_replay(service, held):
    before = service.accept(parse_grant_body(brief_body(new_email("earlier"), external_id="deal-earlier")), CONTEXT)
    service.commits.clear()
    twin = brief_body(new_email("twin"), external_id="deal-twin")
    bodies = [brief_body(new_email("lead"), external_id="deal-lead"), twin, dict(twin),
              brief_body(new_email("earlier-again"), external_id="deal-new"),
              brief_body(before.grant.email, external_id="deal-earlier")]
    results, errors = accept_in_threads(service, bodies, held)
    assert errors == {}
    assert service.commits == [1, 2]                  # the twin once and deal-new; the rest are replays
    assert results[1].grant.id == results[2].grant.id
    assert sorted([results[1].replayed, results[2].replayed]) == [False, True]
    assert results[4].replayed and results[4].grant.id == before.grant.id
    grants, _events = stored(service)
    assert sorted(g.external_id for g in grants) == ["deal-earlier", "deal-lead", "deal-new", "deal-twin"]


def test_a_failing_shared_commit_fails_every_request_in_it_and_stores_none_of_them(service, held):
    bodies = [brief_body(new_email(f"fail{n}"), external_id=f"deal-fail-{n}") for n in range(4)]
    held.fail_next = "INSERT INTO mls_audit_events"    # the second transaction's audit rows
    results, errors = accept_in_threads(service, bodies, held)
    assert sorted(results) == [0]
    assert sorted(errors) == [1, 2, 3]
    assert all(isinstance(e, OperationalError) for e in errors.values())
    grants, events = stored(service)
    assert [g.external_id for g in grants] == ["deal-fail-0"]
    assert {e.subject_id for e in events} == {grants[0].id}
    # The store works again for the next request, and a resent deal is taken as new.
    again = service.accept(parse_grant_body(bodies[2]), CONTEXT)
    assert not again.replayed and again.grant.external_id == "deal-fail-2"


def test_a_key_stored_by_another_process_between_the_look_and_the_insert_fails_only_its_own_grant(
        service, held, monkeypatch):
    other = service.accept(parse_grant_body(brief_body(new_email("other"), external_id="deal-other")), CONTEXT)
    service.commits.clear()
    # The look before the insert misses it, as when another process inserts it a moment later.
    monkeypatch.setattr(intake_writer, "_stored_keys", lambda _connection, _keys: set())
    bodies = [brief_body(new_email("lead2"), external_id="deal-lead2"),
              brief_body(new_email("a"), external_id="deal-a"),
              brief_body(other.grant.email, external_id="deal-other"),
              brief_body(new_email("b"), external_id="deal-b")]
    results, errors = accept_in_threads(service, bodies, held)
    assert errors == {}
    assert results[2].replayed and results[2].grant.id == other.grant.id
    assert not results[1].replayed and not results[3].replayed
    grants, _events = stored(service)
    assert sorted(g.external_id for g in grants) == ["deal-a", "deal-b", "deal-lead2", "deal-other"]


def test_more_requests_than_one_commit_takes_are_written_by_the_next_commits(service, held):
    service.writer.max_batch = 2
    bodies = [brief_body(new_email(f"many{n}"), external_id=f"deal-many-{n}") for n in range(6)]
    results, errors = accept_in_threads(service, bodies, held)
    assert errors == {} and len(results) == 6
    assert service.commits == [1, 2, 2, 1]
    grants, _events = stored(service)
    assert len(grants) == 6


def test_a_leader_stopped_in_the_middle_of_a_commit_leaves_nobody_waiting(service, held, monkeypatch):
    class Stopped(BaseException):
        pass

    real_write = service.writer._write

    def stopped_on_the_shared_commit(batch):
        if len(batch) > 1:
            raise Stopped()
        return real_write(batch)

    monkeypatch.setattr(service.writer, "_write", stopped_on_the_shared_commit)
    bodies = [brief_body(new_email(f"stop{n}"), external_id=f"deal-stop-{n}") for n in range(4)]
    results, errors = accept_in_threads(service, bodies, held)
    assert sorted(results) == [0]
    assert sorted(errors) == [1, 2, 3] and all(isinstance(e, Stopped) for e in errors.values())
    # The writer is free again: the next request leads and is stored.
    again = service.accept(parse_grant_body(bodies[3]), CONTEXT)
    assert not again.replayed and again.grant.external_id == "deal-stop-3"
