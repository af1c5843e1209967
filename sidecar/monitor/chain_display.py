"""A reminder chain's state in the page's language, for the sleepers list (one short line per row)."""

from __future__ import annotations

from collections.abc import Callable

from sidecar.domain.reminder_chain import COMPLETE, FAILED, MONITORING_OFF, NOT_APPROVED, UNKNOWN, ChainStatus
from sidecar.web.i18n import gettext

__all__ = ["chain_text", "stop_text"]

_STOPS: dict[str, Callable[[], str]] = {
    MONITORING_OFF: lambda: gettext("reminders are off for the level"),
    NOT_APPROVED: lambda: gettext("the level's reminders await approval"),
    COMPLETE: lambda: gettext("every letter was sent"),
    FAILED: lambda: gettext("the last letter failed"),
    UNKNOWN: lambda: gettext("the last letter's outcome is unknown"),
    "too_late": lambda: gettext("too late: due more days ago than the catch-up limit"),
    "renewed": lambda: gettext("access renewed"),
    "certificate": lambda: gettext("a manual certificate was issued"),
    "blocked": lambda: gettext("account blocked in MemberLux"),
    "unsubscribed": lambda: gettext("the learner unsubscribed"),
    "memberlux_unsubscribed": lambda: gettext("the learner unsubscribed from MemberLux's letters"),
    "letter_off": lambda: gettext("the letter was emptied"),
    "no_email": lambda: gettext("no usable e-mail address"),
    "not_sleeper": lambda: gettext("no longer a sleeper"),
    "user_deleted": lambda: gettext("the user was deleted"),
}


def stop_text(code: str) -> str:
    """Why a chain sends nothing more; a code this version does not know is shown as it is."""
    found = _STOPS.get(code)
    return found() if found is not None else code


def chain_text(chain: ChainStatus | None) -> dict[str, str]:
    """``{"last": …, "next": …, "stopped": …}``: the parts that apply, worded; empty for no chain."""
    if chain is None:
        return {}
    parts: dict[str, str] = {}
    if chain.last_step is not None:
        parts["last"] = gettext("Letter {step} sent {day}", step=chain.last_step,
                                  day=chain.last_sent_on.isoformat() if chain.last_sent_on else "—")
    if chain.next_step is not None and chain.next_due is not None:
        parts["next"] = gettext("Next: letter {step} on {day}", step=chain.next_step, day=chain.next_due.isoformat())
    if chain.stopped is not None:
        parts["stopped"] = gettext("Stopped: {reason}", reason=stop_text(chain.stopped))
    elif chain.last_step is None and chain.next_step is None:
        parts["stopped"] = gettext("No letter")
    return parts
