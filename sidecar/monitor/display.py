"""Words and times of the monitor pages, shared with the other capabilities' pages: site-zone and UTC
times, level names, the level hierarchy, and the translated reasons of certificates and key notes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone, tzinfo

from sidecar.bootstrap import Runtime
from sidecar.memberlux.reader import Level
from sidecar.monitor.service import Explanation
from sidecar.status import site_timezone
from sidecar.web.i18n import gettext, lazy_gettext, lazy_pgettext, ngettext, pgettext
from sidecar.web.pages import label


# The classifier stores its reason in English (sidecar.domain.certificates); the page shows it translated.
_CERT_REASONS = {
    "level issues certificates by hand": lazy_gettext("The level issues certificates by hand."),
    "issue or insert date missing: not written by auto issue": lazy_gettext("Issue or insert date missing: "
                                                                            "not written by automatic issue."),
    "issue date chosen differs from the insert date": lazy_gettext("The issue date was chosen by hand (differs from the insert date)."),
    "no activation of this level by the user that day": lazy_gettext("No key of this level was activated by the user that day."),
    "issued with a key activation on an auto level": lazy_gettext("Issued with a key activation on a level with automatic certificates."),
}
# Likewise the service's note on a key row that does not count (sidecar.monitor.service._key_facts).
_KEY_NOTES = {
    "never activated": lazy_pgettext("monitor.key.note", "never activated"),
    "banned (revoked by an administrator)": lazy_gettext("banned (revoked by an administrator)"),
    "in the basket, which the access policy excludes": lazy_gettext("in the basket, which the access policy excludes"),
    "start or end date missing (zero date)": lazy_gettext("start or end date missing (zero date)"),
}

# A verdict's short name (the badge on a learner's page) and the sentence that explains it.
VERDICTS = {
    "sleeper": lazy_gettext("sleeper"),
    "active": lazy_pgettext("monitor.verdict", "active"),
    "renewed": lazy_gettext("renewed ahead"),
    "unlimited": lazy_pgettext("grants.term.unlimited", "unlimited"),
    "ancestor_active": lazy_gettext("open via parent level"),
    "manual_certificate": lazy_gettext("certified"),
    "outside_window": lazy_gettext("outside the window"),
    "never_activated": lazy_pgettext("monitor.verdict", "never activated"),
    "banned_only": lazy_gettext("revoked"),
    "no_usable_rows": lazy_gettext("no usable keys"),
    "user_deleted": lazy_gettext("user deleted"),
}
# A sleeper's sentence counts days (singular and plural forms): verdict_sentence writes it.
_VERDICT_SENTENCES = {
    "active": lazy_gettext("Active: a key opens the level on {day}; access runs until {x}."),
    "renewed": lazy_gettext("Not a sleeper: no access on {day}, but a key paid ahead runs until {x}."),
    "unlimited": lazy_gettext("Not a sleeper: the learner holds an unlimited key for this level."),
    "ancestor_active": lazy_gettext("Not a sleeper: access to this level ended on {x}, but a key of a parent level opens it on {day}."),
    "manual_certificate": lazy_gettext("Not a sleeper: access ended on {x}, but the learner holds a manual certificate for this level."),
    "outside_window": lazy_gettext("Access ended on {x}, outside the chosen window."),
    "never_activated": lazy_gettext("Not a sleeper: the learner never activated a key of this level."),
    "banned_only": lazy_gettext("Not a sleeper: every key of this level was banned (access revoked, not expired)."),
    "no_usable_rows": lazy_gettext("Not a sleeper: no key of this level counts (zero dates, or basket keys excluded)."),
    "user_deleted": lazy_pgettext("monitor.reason", "The user no longer exists."),
}
# Why a learner is listed by only one of the old report and the sidecar (sidecar.monitor.legacy_compare).
LEGACY_REASONS = {
    "auto_certificate": lazy_gettext("Only in the sidecar's: every certificate of the learner for this level is automatic (issued on "
                                     "activation); the old query let any certificate end a sleep."),
    "window_in_future": lazy_gettext("Only in the old report: access has not ended on the day evaluated; the old window reached past "
                                     "today, and the old query never compares with today."),
    "ancestor_active": lazy_gettext("Only in the old report: a key of a parent level opens this level; the old query ignores the level "
                                    "hierarchy."),
    "wp_user_status": lazy_gettext("Only in the sidecar's: the WordPress account's user_status is not 0 (a network's spam mark), which the "
                                   "old query filters out."),
    "keys_not_counted": lazy_gettext("The old query counts keys the rule ignores (never activated, without a start date, basket keys while "
                                     "they are excluded), so its last end date differs."),
    "site_day_window": lazy_gettext("The window was left to default: the old report's today is the site's local day, the sidecar's the UTC "
                                    "day."),
    "certificates_out_of_sync": lazy_gettext("The sidecar's copy of the certificates is behind the site (a certificate issued or deleted "
                                             "since the last sync); “mlsidecar sleepers refresh” synchronises it."),
    "unexplained": lazy_gettext("No known reason: compare again; if it stays, report it."),
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
        return name if name else pgettext("grants.level_missing", "level #{id} (not on the site)", id=term_id)

    @staticmethod
    def day(value: date | None) -> str:
        return value.isoformat() if value else "—"

    @staticmethod
    def yes_no(value: bool) -> str:
        return gettext("yes") if value else gettext("no")

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


def as_of(age: timedelta) -> str:
    """How long ago the report was last known current, in the page's language ("as of 12 seconds ago")."""
    seconds = max(0, int(age.total_seconds()))
    if seconds < 60:
        return ngettext("as of {n} second ago", "as of {n} seconds ago", seconds)
    if seconds < 3600:
        return ngettext("as of {n} minute ago", "as of {n} minutes ago", seconds // 60)
    if seconds < 2 * 86400:
        return ngettext("as of {n} hour ago", "as of {n} hours ago", seconds // 3600)
    return ngettext("as of {n} day ago", "as of {n} days ago", seconds // 86400)


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
    x = verdict.expired_on.isoformat() if verdict.expired_on else "—"
    if verdict.reason.value == "sleeper" and verdict.expired_on == explanation.day:
        # X is the first day without access: on X itself "0 days ago" would read oddly.
        text = gettext("Sleeper: access ended today, {x}, and nothing renews or replaces it.", x=x)
    elif verdict.reason.value == "sleeper" and verdict.expired_on:
        text = ngettext("Sleeper: access ended on {x} ({n} day ago) and nothing renews or replaces it.",
                        "Sleeper: access ended on {x} ({n} days ago) and nothing renews or replaces it.",
                        verdict.days_since_expiry(explanation.day), x=x)
    else:
        text = _VERDICT_SENTENCES[verdict.reason.value].format(x=x, day=explanation.day.isoformat())
    if verdict.blocked:
        text += " " + gettext("The account is blocked in MemberLux: listed with a flag and never mailed.")
    return text


