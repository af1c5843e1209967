"""A site of learners, keys, letters and certificates written row by row, and the dashboard's "what happened
after each letter" recomputed from those raw rows by brute force, for the dashboard tests.

The brute force walks every (learner, level) pair and every key end in plain Python, independent of the
SQL and of the matching in :mod:`sidecar.dashboard.outcomes`; only the definitions are shared (they are
the specification: docs/dashboard.md)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone

from sidecar.monitor.settings import Letter as LetterSettings
from sidecar.monitor.settings import MonitorSettings
from sidecar.store.db import unit_of_work
from sidecar.store.monitor_models import CertificateClassRow
from sidecar.store.reminder_models import Reminder
from tests.reminders.school import LEVEL, OTHER_LEVEL

PERIOD_DAYS = 365


@dataclass(frozen=True)
class Key:
    user: int
    level: int
    start: date
    end: date
    unlimited: bool = False
    banned: bool = False
    status: str = "used"
    basket: bool = False

    def qualifies(self) -> bool:
        return not self.banned and self.status in ("used", "expired")


@dataclass(frozen=True)
class Letter:
    user: int
    level: int
    expired_on: date
    step: int
    sent_on: date
    state: str = "sent"


@dataclass(frozen=True)
class Certificate:
    user: int
    level: int
    created: date
    manual: bool = True
    deleted: bool = False


@dataclass
class Site:
    """What was written: the raw rows the brute force reads."""

    school: object
    users: set[int] = field(default_factory=set)
    keys: list[Key] = field(default_factory=list)
    letters: list[Letter] = field(default_factory=list)
    certificates: list[Certificate] = field(default_factory=list)
    _key_id: int = 0
    _letter_id: int = 0
    _cert_id: int = 0

    def learner(self, user: int) -> None:
        self.school.learner(user)
        self.users.add(user)

    def key(self, key: Key) -> None:
        school = self.school
        self._key_id += 1
        with school.writer.begin() as conn:
            conn.execute(school.t("memberlux_term_keys").insert().values(
                id=self._key_id, term_id=key.level, user_id=key.user, key=f"code-{self._key_id}",
                key_type="wpm_keys_basket" if key.basket else "wpm_term_keys", status=key.status, sent=0,
                is_banned=1 if key.banned else 0, duration=(key.end - key.start).days, units="days",
                date_start=key.start.isoformat(), date_end=key.end.isoformat(), date_registered=key.start.isoformat(),
                is_unlimited=1 if key.unlimited else 0))
        self.keys.append(key)

    def letter(self, letter: Letter) -> None:
        sent_at = datetime.combine(letter.sent_on, time(11), tzinfo=timezone.utc)
        with unit_of_work(self.school.runtime.sessions) as session:
            session.add(Reminder(user_id=letter.user, term_id=letter.level, expired_on=letter.expired_on,
                                 step=letter.step, state=letter.state, due_on=letter.sent_on, planned_at=sent_at,
                                 updated_at=sent_at, sent_at=sent_at if letter.state == "sent" else None,
                                 to_address=f"learner{letter.user}@example.com"))
        self.letters.append(letter)

    def certificate(self, cert: Certificate) -> None:
        self._cert_id += 1
        at = datetime.combine(cert.created, time(12), tzinfo=timezone.utc)
        with unit_of_work(self.school.runtime.sessions) as session:
            session.add(CertificateClassRow(
                certificate_id=self._cert_id, user_id=cert.user, level_id=cert.level,
                cls="manual" if cert.manual else "auto", reason="test", date_issue=cert.created,
                create_date=cert.created, responsible_person=1, fingerprint="f", first_seen_at=at, checked_at=at,
                deleted_at=at if cert.deleted else None))
        self.certificates.append(cert)


# --- the brute force ---------------------------------------------------------------------------------

def _first_renewal(site: Site, user: int, level: int, after: date) -> date | None:
    starts = [k.start for k in site.keys if k.user == user and k.level == level and k.qualifies()
              and (k.unlimited or k.end > k.start) and k.start >= after]
    return min(starts, default=None)


def _manual_days(site: Site, user: int, level: int) -> list[date]:
    return [c.created for c in site.certificates if c.user == user and c.level == level and c.manual and not c.deleted]


def _lapses(site: Site, level: int) -> set[tuple[int, date]]:
    found = set()
    for k in site.keys:
        if k.level != level or k.user not in site.users or not k.qualifies() or k.unlimited or k.end <= k.start:
            continue
        covered = any(o.user == k.user and o.level == level and o.qualifies() and o.start <= k.end
                      and (o.unlimited or o.end > k.end) for o in site.keys)
        if not covered:
            found.add((k.user, k.end))
    return found


def brute_force(site: Site, today: date, window: int, delays: dict[int, dict[int, int]],
                levels=(LEVEL, OTHER_LEVEL)) -> dict[tuple[int, int], tuple[tuple[int, ...], tuple[int, ...]]]:
    """(level, step) → ((learners, renewed, certified, either) with a letter, the same without one)."""
    first, last = today - timedelta(days=PERIOD_DAYS), today - timedelta(days=window + 1)
    started: dict[int, date] = {}
    for lt in site.letters:
        if lt.state == "sent":
            started[lt.level] = min(started.get(lt.level, lt.sent_on), lt.sent_on)

    def tally(rows: list[tuple[date, date | None, list[date]]]) -> tuple[int, ...]:
        renewed = [r is not None and day <= r <= day + timedelta(days=window) for day, r, _c in rows]
        certified = [any(day <= c <= day + timedelta(days=window) for c in cs) for day, _r, cs in rows]
        return (len(rows), sum(renewed), sum(certified), sum(a or b for a, b in zip(renewed, certified, strict=True)))

    result = {}
    for level in levels:
        for step in (1, 2, 3):
            with_letter = [(lt.sent_on, _first_renewal(site, lt.user, level, lt.expired_on), _manual_days(site, lt.user, level))
                           for lt in site.letters if lt.level == level and lt.step == step and lt.state == "sent"
                           and first <= lt.sent_on <= last]
            without = []
            delay = delays.get(level, {}).get(step)
            for user, x in (sorted(_lapses(site, level)) if delay is not None else ()):
                day = x + timedelta(days=delay)
                if not (first <= day <= last) or (level in started and day >= started[level]):
                    continue
                renewal, certs = _first_renewal(site, user, level, x), _manual_days(site, user, level)
                if (renewal is not None and renewal < day) or any(c < day for c in certs):
                    continue
                without.append((day, renewal, certs))
            result[(level, step)] = (tally(with_letter), tally(without))
    return result


def dashboard_figures(after) -> dict[tuple[int, int], tuple[tuple[int, ...], tuple[int, ...]]]:
    def as_tuple(t) -> tuple[int, ...]:
        return (t.learners, t.renewed, t.certified, t.either)

    return {(level, row.step): (as_tuple(row.letters), as_tuple(row.no_letter))
            for level, rows in after.by_level.items() for row in rows}


# --- letters on a demo site --------------------------------------------------------------------------

def letters_after_lapses(runtime, level: int, today: date, started: date, delays=(3, 10, 30)) -> int:
    """Give ``level`` three letters and a ledger as if its reminders had run since ``started``: a ``sent``
    letter for every access of the level that ended (and was not carried on) and every step whose day lies
    from ``started`` to yesterday. Returns how many letters it wrote."""
    settings = MonitorSettings(runtime)
    letters = tuple(LetterSettings(d, f"Reminder {n}", "<p>Your access ended.</p>") for n, d in enumerate(delays, start=1))
    settings.save(replace(settings.effective(level), enabled=True, letters=letters), actor="test")
    written = 0
    with unit_of_work(runtime.sessions) as session:
        for user, _level, expired_on, _renewed in runtime.reader.lapses({level: (started - timedelta(days=max(delays)), today)}):
            for step, delay in enumerate(delays, start=1):
                day = expired_on + timedelta(days=delay)
                if started <= day < today:
                    at = datetime.combine(day, time(9), tzinfo=timezone.utc)
                    session.add(Reminder(user_id=user, term_id=level, expired_on=expired_on, step=step, state="sent",
                                         due_on=day, planned_at=at, updated_at=at, sent_at=at))
                    written += 1
    return written


# --- a random site -------------------------------------------------------------------------------------

def random_site(site: Site, seed: int, today: date, delays: tuple[int, int, int], learners: int = 40) -> None:
    """Learners with one to three periods on the two levels (gaps, renewals before and after expiry,
    unlimited, banned, unused and basket keys, deleted accounts), letters on LEVEL from a day on,
    manual, automatic and deleted certificates."""
    rng = random.Random(seed)
    reminders_from = today - timedelta(days=rng.randint(60, 200))
    chains: set[tuple[int, date, int]] = set()     # the ledger holds one row per (user, level, X, step)
    for user in range(1, learners + 1):
        if rng.random() > 0.05:
            site.learner(user)
        for level in rng.sample((LEVEL, OTHER_LEVEL), rng.randint(1, 2)):
            start = today - timedelta(days=rng.randint(30, 520))
            for _period in range(rng.randint(1, 3)):
                end = start + timedelta(days=rng.choice((0, 7, 30, 30, 60, 90)))
                roll = rng.random()
                site.key(Key(user, level, start, end, unlimited=roll < 0.04, banned=0.04 <= roll < 0.08,
                             status="new" if 0.08 <= roll < 0.1 else rng.choice(("used", "expired")),
                             basket=0.1 <= roll < 0.13))
                if level == LEVEL and roll >= 0.13:
                    for step, delay in enumerate(delays, start=1):
                        sent = end + timedelta(days=delay + rng.choice((0, 0, 1, 2)))
                        if reminders_from <= sent < today and rng.random() < 0.7 and (user, end, step) not in chains:
                            chains.add((user, end, step))
                            site.letter(Letter(user, level, end, step, sent,
                                               state=rng.choice(("sent",) * 5 + ("failed", "skipped"))))
                start = end + timedelta(days=rng.choice((0, 0, 3, 10, 25, 40, 120)))
            if rng.random() < 0.3:
                site.certificate(Certificate(user, level, today - timedelta(days=rng.randint(0, 400)),
                                             manual=rng.random() < 0.8, deleted=rng.random() < 0.1))
