"""Words and times of the monitor pages, shared with the other capabilities' pages: site-zone and UTC
times, level names, the level hierarchy, and the translated reasons of certificates and key notes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timezone, tzinfo

from sidecar.bootstrap import Runtime
from sidecar.memberlux.reader import Level
from sidecar.monitor.service import Explanation
from sidecar.status import site_timezone
from sidecar.web.i18n import lazy_translate, translate
from sidecar.web.pages import label


# The classifier stores its reason in English (sidecar.domain.certificates); the page shows it translated.
_CERT_REASONS = {
    "level issues certificates by hand": lazy_translate("monitor.cert.reason.level_manual"),
    "issue or insert date missing: not written by auto issue": lazy_translate("monitor.cert.reason.missing_dates"),
    "issue date chosen differs from the insert date": lazy_translate("monitor.cert.reason.date_differs"),
    "no activation of this level by the user that day": lazy_translate("monitor.cert.reason.no_activation"),
    "issued with a key activation on an auto level": lazy_translate("monitor.cert.reason.auto"),
}
# Likewise the service's note on a key row that does not count (sidecar.monitor.service._key_facts).
_KEY_NOTES = {
    "never activated": lazy_translate("monitor.key.note.new"),
    "banned (revoked by an administrator)": lazy_translate("monitor.key.note.banned"),
    "in the basket, which the access policy excludes": lazy_translate("monitor.key.note.basket"),
    "start or end date missing (zero date)": lazy_translate("monitor.key.note.zero_date"),
}

# A verdict's short name (the badge on a learner's page) and the sentence that explains it.
VERDICTS = {
    "sleeper": lazy_translate("monitor.verdict.sleeper"),
    "active": lazy_translate("monitor.verdict.active"),
    "renewed": lazy_translate("monitor.verdict.renewed"),
    "unlimited": lazy_translate("monitor.verdict.unlimited"),
    "ancestor_active": lazy_translate("monitor.verdict.ancestor_active"),
    "manual_certificate": lazy_translate("monitor.verdict.manual_certificate"),
    "outside_window": lazy_translate("monitor.verdict.outside_window"),
    "never_activated": lazy_translate("monitor.verdict.never_activated"),
    "banned_only": lazy_translate("monitor.verdict.banned_only"),
    "no_usable_rows": lazy_translate("monitor.verdict.no_usable_rows"),
    "user_deleted": lazy_translate("monitor.verdict.user_deleted"),
}
_VERDICT_SENTENCES = {
    "sleeper": lazy_translate("monitor.reason.sleeper"),
    "active": lazy_translate("monitor.reason.active"),
    "renewed": lazy_translate("monitor.reason.renewed"),
    "unlimited": lazy_translate("monitor.reason.unlimited"),
    "ancestor_active": lazy_translate("monitor.reason.ancestor_active"),
    "manual_certificate": lazy_translate("monitor.reason.manual_certificate"),
    "outside_window": lazy_translate("monitor.reason.outside_window"),
    "never_activated": lazy_translate("monitor.reason.never_activated"),
    "banned_only": lazy_translate("monitor.reason.banned_only"),
    "no_usable_rows": lazy_translate("monitor.reason.no_usable_rows"),
    "user_deleted": lazy_translate("monitor.reason.user_deleted"),
}
# Why a learner is listed by only one of the old report and the sidecar (sidecar.monitor.legacy_compare).
LEGACY_REASONS = {
    "auto_certificate": lazy_translate("legacy.reason.auto_certificate"),
    "window_in_future": lazy_translate("legacy.reason.window_in_future"),
    "ancestor_active": lazy_translate("legacy.reason.ancestor_active"),
    "wp_user_status": lazy_translate("legacy.reason.wp_user_status"),
    "keys_not_counted": lazy_translate("legacy.reason.keys_not_counted"),
    "site_day_window": lazy_translate("legacy.reason.site_day_window"),
    "certificates_out_of_sync": lazy_translate("legacy.reason.certificates_out_of_sync"),
    "unexplained": lazy_translate("legacy.reason.unexplained"),
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
        return label(_KEY_NOTES, text)

    @staticmethod
    def cert_reason(text: str) -> str:
        return label(_CERT_REASONS, text)

    @staticmethod
    def verdict(reason: str) -> str:
        return label(VERDICTS, reason)

    @staticmethod
    def legacy_reason(code: str) -> str:
        return label(LEGACY_REASONS, code)

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
    text = _VERDICT_SENTENCES[verdict.reason.value].format(
        x=verdict.expired_on.isoformat() if verdict.expired_on else "—",
        day=explanation.day.isoformat(),
        days=verdict.days_since_expiry(explanation.day) if verdict.expired_on else "—",
    )
    if verdict.blocked:
        text += " " + translate("monitor.reason.blocked")
    return text


