"""What each webhook event type means, in the UI's language: one literal catalog key per type, so the
string extractor sees every one of them."""

from __future__ import annotations

from sidecar.web.i18n import translate


def event_texts() -> dict[str, str]:
    """Every event type's one-line explanation, in :data:`sidecar.config.WEBHOOK_EVENTS` order."""
    return {
        "grant.accepted": translate("webhooks.event.grant.accepted"),
        "grant.succeeded": translate("webhooks.event.grant.succeeded"),
        "grant.duplicated": translate("webhooks.event.grant.duplicated"),
        "grant.failed": translate("webhooks.event.grant.failed"),
        "grant.unsettled": translate("webhooks.event.grant.unsettled"),
        "program.step_granted": translate("webhooks.event.program.step_granted"),
        "program.completed": translate("webhooks.event.program.completed"),
        "reminder.sent": translate("webhooks.event.reminder.sent"),
        "reminder.failed": translate("webhooks.event.reminder.failed"),
        "sleeper.detected": translate("webhooks.event.sleeper.detected"),
        "access.activated": translate("webhooks.event.access.activated"),
        "access.expired": translate("webhooks.event.access.expired"),
        "certificate.issued": translate("webhooks.event.certificate.issued"),
    }
