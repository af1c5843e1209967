"""Words and times of the monitor pages, shared with the other capabilities' pages: site-zone and UTC
times, level names, the level hierarchy, and the translated reasons of certificates and key notes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timezone, tzinfo

from sidecar.bootstrap import Runtime
from sidecar.memberlux.reader import Level
from sidecar.monitor.service import Explanation
from sidecar.status import site_timezone
from sidecar.web.i18n import translate


# The classifier stores its reason in English (sidecar.domain.certificates); the page shows it translated.
_CERT_REASONS = {
    "level issues certificates by hand": "monitor.cert.reason.level_manual",
    "issue or insert date missing: not written by auto issue": "monitor.cert.reason.missing_dates",
    "issue date chosen differs from the insert date": "monitor.cert.reason.date_differs",
    "no activation of this level by the user that day": "monitor.cert.reason.no_activation",
    "issued with a key activation on an auto level": "monitor.cert.reason.auto",
}
# Likewise the service's note on a key row that does not count (sidecar.monitor.service._key_facts).
_KEY_NOTES = {
    "never activated": "monitor.key.note.new",
    "banned (revoked by an administrator)": "monitor.key.note.banned",
    "in the basket, which the access policy excludes": "monitor.key.note.basket",
    "start or end date missing (zero date)": "monitor.key.note.zero_date",
}


class Display:
    """Site-zone and UTC times, level names and small labels shared by the monitor templates."""

    def __init__(self, zone: tzinfo, levels: Sequence[Level], today: date) -> None:
        self.zone = zone
        self.zone_name = str(zone)
        self.names = {level.term_id: level.name for level in levels}
        self.today = today

    def local(self, moment: datetime | None) -> str:
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M") if moment else "—"

    def utc(self, moment: datetime | None) -> str:
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if moment else "—"

    def level(self, term_id: int | None) -> str:
        if term_id is None:
            return "—"
        name = self.names.get(term_id)
        return name if name else translate("monitor.level_missing", id=term_id)

    @staticmethod
    def day(value: date | None) -> str:
        return value.isoformat() if value else "—"

    @staticmethod
    def yes_no(value: bool) -> str:
        return translate("monitor.yes") if value else translate("monitor.no")

    @staticmethod
    def key_note(text: str) -> str:
        key = _KEY_NOTES.get(text)
        return translate(key) if key else text

    @staticmethod
    def cert_reason(text: str) -> str:
        key = _CERT_REASONS.get(text)
        return translate(key) if key else text

    @staticmethod
    def seconds(value: float) -> str:
        return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def display_for(runtime: Runtime, levels: Sequence[Level] | None = None) -> Display:
    zone, _source = site_timezone(runtime)
    return Display(zone, runtime.reader.levels() if levels is None else levels, runtime.clock.today_utc())


def level_tree(levels: Sequence[Level]) -> list[tuple[Level, int]]:
    """Levels in hierarchy order (each parent followed by its children) with their depth.

    A level whose parent is missing (deleted, or another taxonomy) is shown at the top; a parent cycle
    (never written by WordPress, but the data is not ours) cannot loop: each level appears once.
    """
    ids = {level.term_id for level in levels}
    children: dict[int, list[Level]] = {}
    roots: list[Level] = []
    for level in levels:  # keeps the reader's order (MemberLux's custom order, then name) among siblings
        if level.parent and level.parent in ids and level.parent != level.term_id:
            children.setdefault(level.parent, []).append(level)
        else:
            roots.append(level)
    ordered: list[tuple[Level, int]] = []
    seen: set[int] = set()

    def visit(level: Level, depth: int) -> None:
        if level.term_id in seen:
            return
        seen.add(level.term_id)
        ordered.append((level, depth))
        for child in children.get(level.term_id, ()):
            visit(child, depth + 1)

    for root in roots:
        visit(root, 0)
    for level in levels:  # only members of a cycle are left
        visit(level, 0)
    return ordered




def verdict_sentence(explanation: Explanation) -> str:
    """The reason code of a verdict as a sentence in the page's language."""
    verdict = explanation.verdict
    text = translate(
        f"monitor.reason.{verdict.reason.value}",
        x=verdict.expired_on.isoformat() if verdict.expired_on else "—",
        day=explanation.day.isoformat(),
        days=verdict.days_since_expiry(explanation.day) if verdict.expired_on else "—",
    )
    if verdict.blocked:
        text += " " + translate("monitor.reason.blocked")
    return text


