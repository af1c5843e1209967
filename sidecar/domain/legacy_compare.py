"""Why the old learning-monitor report and the sidecar's report list different learners (pure).

The old plugin's live query ("V3", legacy-plugins.md §3.4, §3.4.1) lists user U for level T when U's
WordPress ``user_status`` is 0, U holds **no** certificate for T (automatic ones included), U has no
non-banned unlimited row of T, and L = ``MAX(date_end)`` over U's non-banned rows of T (any status, any
key type) lies in its window [from, to], both days inclusive — with no comparison with today and no
look at parent levels. :func:`legacy_view` and :func:`legacy_lists` restate that rule for one user, from
the same rows the sidecar reads, so that a difference can be traced to the clause that makes it.

For a user in only one of the two lists, :func:`explain_difference` names the reason from the sidecar's
own verdict (:func:`sidecar.domain.sleepers.evaluate`) and the old rule's view. It only names a reason
when the facts prove it; anything else is :attr:`CompareReason.UNEXPLAINED` — a bug to report, or data
that changed between the two reads (comparing again tells which).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from sidecar.domain.access import KeyRow
from sidecar.domain.sleepers import Reason, SleeperVerdict, Window

__all__ = ["CompareReason", "LegacyView", "Difference", "legacy_view", "legacy_lists", "explain_difference"]


class CompareReason(enum.Enum):
    """Why a learner is in one report only; the order is the order reports list them in."""

    AUTO_CERTIFICATE = "auto_certificate"                   # sidecar only: the old query let auto certificates count
    WINDOW_IN_FUTURE = "window_in_future"                   # old only: access has not ended on D
    ANCESTOR_ACTIVE = "ancestor_active"                     # old only: a parent level's key opens the level
    WP_USER_STATUS = "wp_user_status"                       # sidecar only: WordPress user_status is not 0
    KEYS_NOT_COUNTED = "keys_not_counted"                   # either: the old query counts keys the rule ignores
    SITE_DAY_WINDOW = "site_day_window"                     # either: default window, site's day vs UTC day
    CERTIFICATES_OUT_OF_SYNC = "certificates_out_of_sync"   # either: our copy of the certificates is behind
    UNEXPLAINED = "unexplained"


@dataclass(frozen=True)
class LegacyView:
    """What the old query sees of one user and one level."""

    user_exists: bool
    user_status_ok: bool        # WordPress users.user_status = 0
    has_certificate: bool       # any certificate row of the user for the level, automatic ones included
    unlimited: bool             # a non-banned row with is_unlimited = 1, whatever its status or type
    last_end: date | None       # L: MAX(date_end) over the non-banned rows (None: no row, or zero dates only)


def legacy_view(rows: Iterable[KeyRow], *, user_exists: bool = True, user_status: int = 0,
                has_certificate: bool = False) -> LegacyView:
    """The old query's view of one user's rows of one level (rows of other levels must not be passed)."""
    counted = [row for row in rows if not row.is_banned]
    ends = [row.date_end for row in counted if row.date_end is not None]
    return LegacyView(user_exists=user_exists, user_status_ok=user_status == 0, has_certificate=has_certificate,
                      unlimited=any(row.is_unlimited for row in counted), last_end=max(ends) if ends else None)


def legacy_lists(view: LegacyView, window: Window) -> bool:
    """Whether the old query lists the user for the window [from, to] (both needed, both inclusive)."""
    if window.start is None or window.end is None:
        raise ValueError("the old report's window always has both days")
    return (view.user_exists and view.user_status_ok and not view.has_certificate and not view.unlimited
            and view.last_end is not None and window.start <= view.last_end <= window.end)


@dataclass(frozen=True)
class Difference:
    """The facts about one user listed by exactly one of the two reports.

    ``verdict``: the sidecar's rule for the user on day D with the sidecar's window.
    ``legacy_window``: the old report's [from, to]; ``sidecar_window``: the sidecar's, before it is
    clamped to D. ``certificates_known``: every certificate row of the user for the level on the site is
    in the sidecar's classified copy (none appeared since it was last synchronised).
    """

    in_legacy: bool
    verdict: SleeperVerdict
    legacy: LegacyView
    legacy_window: Window
    sidecar_window: Window
    certificates_known: bool = True


_NOT_COUNTED = frozenset({Reason.NEVER_ACTIVATED, Reason.BANNED_ONLY, Reason.NO_USABLE_ROWS})


def explain_difference(d: Difference) -> CompareReason:
    """The reason a user is in one report only (see the module's docstring)."""
    return _only_in_legacy(d) if d.in_legacy else _only_in_sidecar(d)


def _windows_differ(d: Difference) -> CompareReason:
    # Same last end on both sides, inside one window and outside the other: only the windows differ, which
    # happens when they were left to default (the old form's today is the site's day, the rule's is UTC).
    return CompareReason.SITE_DAY_WINDOW if d.legacy_window != d.sidecar_window else CompareReason.UNEXPLAINED


def _only_in_legacy(d: Difference) -> CompareReason:
    # The old rule, applied to the rows read now, must list the user too; if not, the rows changed between
    # the two reads (or this restatement of the old rule is wrong): nothing here explains it.
    if not legacy_lists(d.legacy, d.legacy_window):
        return CompareReason.UNEXPLAINED
    reason = d.verdict.reason
    if reason in (Reason.ACTIVE, Reason.RENEWED):
        # X > D: access has not ended, yet the old window reached L (>= X): it compares with the window only.
        return CompareReason.WINDOW_IN_FUTURE
    if reason is Reason.ANCESTOR_ACTIVE:
        return CompareReason.ANCESTOR_ACTIVE
    if reason is Reason.MANUAL_CERTIFICATE:
        # The old query sees no certificate at all, the sidecar's copy holds a manual one: it was deleted on
        # the site since the copy was last synchronised.
        return CompareReason.CERTIFICATES_OUT_OF_SYNC
    if reason in _NOT_COUNTED:
        return CompareReason.KEYS_NOT_COUNTED
    if reason is Reason.OUTSIDE_WINDOW:
        if d.verdict.expired_on != d.legacy.last_end:
            return CompareReason.KEYS_NOT_COUNTED
        return _windows_differ(d)
    # sleeper (the rule lists them, the list does not), unlimited, user_deleted: not the old query's doing.
    return CompareReason.UNEXPLAINED


def _only_in_sidecar(d: Difference) -> CompareReason:
    if not d.verdict.is_sleeper or legacy_lists(d.legacy, d.legacy_window) or not d.legacy.user_exists:
        # The list and the rule disagree, or the old rule would have listed the user, or the user vanished
        # between the reads.
        return CompareReason.UNEXPLAINED
    if not d.legacy.user_status_ok:
        return CompareReason.WP_USER_STATUS
    if d.legacy.has_certificate:
        # A sleeper holds no live manual certificate in the sidecar's copy: if the copy knows every one of
        # the site's certificates, they are all automatic.
        return CompareReason.AUTO_CERTIFICATE if d.certificates_known else CompareReason.CERTIFICATES_OUT_OF_SYNC
    if d.legacy.unlimited or d.legacy.last_end != d.verdict.expired_on:
        return CompareReason.KEYS_NOT_COUNTED
    return _windows_differ(d)
