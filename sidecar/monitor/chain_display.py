"""A reminder chain's state in the page's language, for the sleepers list (one short line per row)."""

from __future__ import annotations

from collections.abc import Callable

from sidecar.domain.reminder_chain import COMPLETE, FAILED, MONITORING_OFF, NOT_APPROVED, UNKNOWN, ChainStatus
from sidecar.web.i18n import translate

__all__ = ["chain_text", "stop_text"]

_STOPS: dict[str, Callable[[], str]] = {
    MONITORING_OFF: lambda: translate("sleepers.chain.monitoring_off"),
    NOT_APPROVED: lambda: translate("sleepers.chain.not_approved"),
    COMPLETE: lambda: translate("sleepers.chain.complete"),
    FAILED: lambda: translate("sleepers.chain.failed"),
    UNKNOWN: lambda: translate("sleepers.chain.unknown"),
    "too_late": lambda: translate("reminders.reason.too_late"),
    "renewed": lambda: translate("reminders.reason.renewed"),
    "certificate": lambda: translate("reminders.reason.certificate"),
    "blocked": lambda: translate("reminders.reason.blocked"),
    "unsubscribed": lambda: translate("reminders.reason.unsubscribed"),
    "memberlux_unsubscribed": lambda: translate("reminders.reason.memberlux_unsubscribed"),
    "letter_off": lambda: translate("reminders.reason.letter_off"),
    "no_email": lambda: translate("reminders.reason.no_email"),
    "not_sleeper": lambda: translate("reminders.reason.not_sleeper"),
    "user_deleted": lambda: translate("reminders.reason.user_deleted"),
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
        parts["last"] = translate("sleepers.chain.last", step=chain.last_step,
                                  day=chain.last_sent_on.isoformat() if chain.last_sent_on else "—")
    if chain.next_step is not None and chain.next_due is not None:
        parts["next"] = translate("sleepers.chain.next", step=chain.next_step, day=chain.next_due.isoformat())
    if chain.stopped is not None:
        parts["stopped"] = translate("sleepers.chain.stopped", reason=stop_text(chain.stopped))
    elif chain.last_step is None and chain.next_step is None:
        parts["stopped"] = translate("sleepers.chain.none")
    return parts
