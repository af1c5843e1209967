"""What each webhook event type means, in the UI's language: one literal catalog key per type, so the
string extractor sees every one of them."""

from __future__ import annotations

from sidecar.web.i18n import gettext


def event_texts() -> dict[str, str]:
    """Every event type's one-line explanation, in :data:`sidecar.config.WEBHOOK_EVENTS` order."""
    return {
        "grant.accepted": gettext("A grant request was recorded."),
        "grant.succeeded": gettext("MemberLux granted the access (key, dates)."),
        "grant.duplicated": gettext("More than one key carries a grant's id: the learner got extra access; an admin must act."),
        "grant.failed": gettext("A grant failed for good."),
        "grant.unsettled": gettext("A grant's outcome is still unknown after its settle time: the learner may be without access; an admin "
                                   "should look."),
        "program.step_granted": gettext("A learner passed a program step; the next step is granted."),
        "program.completed": gettext("A learner completed a program."),
        "reminder.sent": gettext("A reminder letter was sent."),
        "reminder.failed": gettext("A reminder letter could not be sent."),
        "sleeper.detected": gettext("A learner became a sleeper (access expired, not renewed)."),
        "access.activated": gettext("A key was activated in MemberLux, from any source (checkout, activation code, administrator, the "
                                    "sidecar)."),
        "access.expired": gettext("A learner's access to a level ended without renewal (sleepers and manual-certificate holders)."),
        "certificate.issued": gettext("A certificate was issued (automatic or manual)."),
    }
