"""The fault plan of the emulated site, and the gates every order passes between two of its steps.

A real site is slow, fails half-way, keeps working after the caller gave up, and is restarted under
running requests (``memberlux/core.md`` 5.5, 10 "Partial writes", 13). The plan says how this site
misbehaves; :class:`OrderGates` applies it at each step boundary of an order (``order_path``):

* ``step_delays`` - seconds spent before a step;
* ``pause_before`` - the order blocks before the step until :meth:`OrderGates.release`;
* ``fail_next`` item ``"at:<step>"`` - a PHP fatal right before the step;
* :meth:`OrderGates.halt` - every running order stops at its next boundary (PHP-FPM restart).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PRODUCT_STEPS", "TERM_STEPS", "STEPS", "Faults", "FaultError", "Fatal", "Halted", "RunInfo", "OrderGates",
    "update_faults",
]

#: The order path of the real (WooCommerce) dialect, in MemberLux's order (core.md 13, 7, 8).
PRODUCT_STEPS = ("user", "order", "key", "autoresponder", "mails", "webhooks", "keys_meta", "certificate",
                 "processed")
#: The owner's term-id dialect: no WooCommerce order, no shop e-mails.
TERM_STEPS = ("user", "key", "autoresponder", "webhooks", "keys_meta", "certificate")
STEPS = PRODUCT_STEPS

_OUTCOMES = ("before", "after")


@dataclass
class Faults:
    """How the site misbehaves; adjustable at run time (``POST /devstack/faults``)."""

    #: Seconds every order spends before its first step (PHP and WooCommerce booting, slow host).
    latency_seconds: float = 0.0
    #: Extra delay per order, uniform in [0, jitter], drawn from the site's seeded generator.
    latency_jitter_seconds: float = 0.0
    #: Share of orders that fail at random ("before" or "after", half each).
    failure_rate: float = 0.0
    #: Maintenance mode: every WordPress request answers 503.
    down: bool = False
    #: Forced outcomes for the next orders, consumed in order: "before", "after" or "at:<step>".
    fail_next: list[str] = field(default_factory=list)
    #: Seconds spent right before a step ({step: seconds}).
    step_delays: dict[str, float] = field(default_factory=dict)
    #: Seconds each e-mail takes to send (a slow SMTP relay).
    mail_seconds: float = 0.0
    #: A proxy in front answers 504 after this long while PHP goes on (0 = no proxy limit).
    gateway_timeout_seconds: float = 0.0
    #: Orders block before these steps until released.
    pause_before: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"latency_seconds": self.latency_seconds, "latency_jitter_seconds": self.latency_jitter_seconds,
                "failure_rate": self.failure_rate, "down": self.down, "fail_next": list(self.fail_next),
                "step_delays": dict(self.step_delays), "mail_seconds": self.mail_seconds,
                "gateway_timeout_seconds": self.gateway_timeout_seconds, "pause_before": list(self.pause_before)}


class FaultError(ValueError):
    """An invalid fault update; ``data`` goes into the 400 answer."""

    def __init__(self, message: str, **data: Any):
        super().__init__(message)
        self.data = data


class Fatal(Exception):
    """A PHP fatal error: the request dies where it is, earlier writes stay."""


class Halted(Exception):
    """The PHP worker was killed under the request (``OrderGates.halt``)."""


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise FaultError(f"{name} must be a number of seconds")
    try:
        number = float(value)
    except ValueError:
        raise FaultError(f"{name} must be a number of seconds") from None
    if not number >= 0 or number == float("inf"):
        raise FaultError(f"{name} must be zero or more seconds")
    return number


def _flag(name: str, value: Any) -> bool:
    if value in (True, 1, "1", "true", "on", "yes"):
        return True
    if value in (False, 0, "0", "false", "off", "no", ""):
        return False
    raise FaultError(f"{name} must be true or false")


def _step(name: str, value: Any) -> str:
    if value not in STEPS:
        raise FaultError(f"{name}: unknown step {value!r}; valid steps: {', '.join(STEPS)}", valid_steps=list(STEPS))
    return str(value)


def _list(value: Any) -> list:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    if value is None:
        return []
    raise FaultError("expected a list")


_FIELDS = ("latency_seconds", "latency_jitter_seconds", "failure_rate", "down", "fail_next", "step_delays",
           "mail_seconds", "gateway_timeout_seconds", "pause_before")
_ACTIONS = ("release", "halt")


def update_faults(faults: Faults, data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``data`` completely, then apply its fields to ``faults``; returns the requested actions.

    Actions: ``release`` (true = every paused order, or a run number) and ``halt`` (true).
    Raises :class:`FaultError` and changes nothing when any field is invalid.
    """
    unknown = sorted(set(data) - set(_FIELDS) - set(_ACTIONS))
    if unknown:
        raise FaultError(f"unknown field(s): {', '.join(unknown)}; valid fields: {', '.join(_FIELDS + _ACTIONS)}")
    changes: dict[str, Any] = {}
    for name in ("latency_seconds", "latency_jitter_seconds", "mail_seconds", "gateway_timeout_seconds"):
        if name in data:
            changes[name] = _seconds(name, data[name])
    if "failure_rate" in data:
        rate = _seconds("failure_rate", data["failure_rate"])
        if rate > 1:
            raise FaultError("failure_rate must be between 0 and 1")
        changes["failure_rate"] = rate
    if "down" in data:
        changes["down"] = _flag("down", data["down"])
    if "fail_next" in data:
        outcomes = []
        for item in _list(data["fail_next"]):
            if not isinstance(item, str) or (item not in _OUTCOMES and not item.startswith("at:")):
                raise FaultError("fail_next items must be 'before', 'after' or 'at:<step>'", valid_steps=list(STEPS))
            if item.startswith("at:"):
                _step("fail_next", item[3:])
            outcomes.append(item)
        changes["fail_next"] = outcomes
    if "step_delays" in data:
        delays = data["step_delays"]
        if not isinstance(delays, Mapping):
            raise FaultError("step_delays must be an object {step: seconds}", valid_steps=list(STEPS))
        changes["step_delays"] = {_step("step_delays", step): _seconds(f"step_delays.{step}", seconds)
                                  for step, seconds in delays.items()}
    if "pause_before" in data:
        changes["pause_before"] = [_step("pause_before", step) for step in _list(data["pause_before"])]
    actions: dict[str, Any] = {}
    if "release" in data:
        release = data["release"]
        if release is True or (isinstance(release, int) and not isinstance(release, bool) and release > 0):
            actions["release"] = None if release is True else int(release)
        elif release not in (False, None):
            raise FaultError("release must be true (every paused order) or a run number")
    if "halt" in data and _flag("halt", data["halt"]):
        actions["halt"] = True
    for name, value in changes.items():
        setattr(faults, name, value)
    return actions


@dataclass
class RunInfo:
    """One order in flight, as ``GET /devstack/health`` lists it."""

    run: int
    dialect: str
    email: str
    started: float = field(default_factory=time.monotonic)
    order_id: int | None = None
    #: The step running now (or about to run), ``None`` before the first.
    step: str | None = None
    #: The step this order is paused before, if it is.
    paused_before: str | None = None
    halt_generation: int = 0
    released: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    def as_dict(self) -> dict[str, Any]:
        return {"run": self.run, "dialect": self.dialect, "email": self.email, "order_id": self.order_id,
                "step": self.step, "paused_before": self.paused_before,
                "seconds": round(time.monotonic() - self.started, 3)}


class OrderGates:
    """Applies the plan between the steps of running orders; knows every order in flight."""

    def __init__(self, faults: Faults):
        self.faults = faults
        self._cond = threading.Condition()
        self._runs: dict[int, RunInfo] = {}
        self._next_run = 1
        self._halt_generation = 0

    # -- bookkeeping ------------------------------------------------------------------------------

    def start(self, dialect: str, email: str) -> RunInfo:
        with self._cond:
            info = RunInfo(run=self._next_run, dialect=dialect, email=email, halt_generation=self._halt_generation)
            self._next_run += 1
            self._runs[info.run] = info
            self._cond.notify_all()
            return info

    def finish(self, info: RunInfo) -> None:
        with self._cond:
            self._runs.pop(info.run, None)
            info.done.set()
            self._cond.notify_all()

    def running(self) -> list[RunInfo]:
        with self._cond:
            return sorted(self._runs.values(), key=lambda r: r.run)

    def paused(self) -> list[RunInfo]:
        return [info for info in self.running() if info.paused_before is not None]

    # -- the boundary -----------------------------------------------------------------------------

    def _check_halt(self, info: RunInfo) -> None:
        if info.halt_generation != self._halt_generation:
            raise Halted(f"run {info.run} halted before {info.step}")

    def _sleep(self, info: RunInfo, seconds: float) -> None:
        """Sleep, but wake up (and stop) when the site is halted."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while True:
                self._check_halt(info)
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def delay(self, info: RunInfo, seconds: float) -> None:
        if seconds > 0:
            self._sleep(info, seconds)
        else:
            with self._cond:
                self._check_halt(info)

    def boundary(self, info: RunInfo, step: str) -> None:
        """Between two steps: halt check, the step's delay, then a pause if the plan asks for one."""
        with self._cond:
            self._check_halt(info)
            info.step = step
        self.delay(info, float(self.faults.step_delays.get(step, 0.0)))
        with self._cond:
            if step in self.faults.pause_before:
                info.paused_before, info.released = step, False
                self._cond.notify_all()
                try:
                    while not info.released:
                        self._check_halt(info)
                        self._cond.wait()
                finally:
                    info.paused_before = None
                    self._cond.notify_all()
            self._check_halt(info)

    # -- controls ---------------------------------------------------------------------------------

    def release(self, run: int | None = None) -> int:
        """Let paused orders go on (all, or the one with this run number); returns how many."""
        with self._cond:
            chosen = [i for i in self._runs.values() if i.paused_before is not None and (run is None or i.run == run)]
            for info in chosen:
                info.released = True
            self._cond.notify_all()
            return len(chosen)

    def halt(self, *, wait: bool = True, timeout: float = 30.0) -> int:
        """Every order in flight stops at its next step boundary; returns how many were running.

        With ``wait`` this returns once they all stopped (a step under way finishes first).
        """
        with self._cond:
            self._halt_generation += 1
            victims = list(self._runs.values())
            self._cond.notify_all()
        if wait:
            deadline = time.monotonic() + timeout
            for info in victims:
                info.done.wait(max(0.0, deadline - time.monotonic()))
        return len(victims)

    def wait_paused(self, step: str | None = None, *, count: int = 1, timeout: float = 10.0) -> list[RunInfo]:
        """Block until ``count`` orders are paused (before ``step`` if given); returns them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = sorted((i for i in self._runs.values() if i.paused_before is not None
                                and (step is None or i.paused_before == step)), key=lambda r: r.run)
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(found)} of {count} order(s) paused before {step or 'any step'} "
                                       f"after {timeout} s; running: {[i.as_dict() for i in self._runs.values()]}")
                self._cond.wait(left)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Block until no order is in flight."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._runs:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"orders still running after {timeout} s: "
                                       f"{[i.as_dict() for i in self._runs.values()]}")
                self._cond.wait(left)
