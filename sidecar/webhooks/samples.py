"""An example ``data`` of every event type, as docs/webhooks.md shows them: a body template is tried on
these when it is saved (every type the endpoint receives), so a template that cannot render one of its
events is refused then, not at delivery. A leaf module: the configuration imports it through the
template checker."""

from __future__ import annotations

from typing import Any

TEST_EVENT = "webhook.test"

SAMPLE_DATA: dict[str, dict[str, Any]] = {
    "grant.accepted": {"grant_id": "g01m86gth2rav8thwdmvpj8", "channel": "api", "external_id": "deal-789",
                       "email": "learner@example.com", "term_id": 157, "duration": 6, "units": "months"},
    "grant.succeeded": {"grant_id": "g01m86gth2rav8thwdmvpj8", "channel": "api", "external_id": "deal-789",
                        "email": "learner@example.com", "user_id": 4711, "term_id": 157, "order_id": 90211,
                        "key_id": 388120, "date_start": "2026-11-24", "date_end": "2027-05-24", "is_unlimited": False},
    "grant.duplicated": {"grant_id": "g01m86gth2rav8thwdmvpj8", "channel": "api", "external_id": "deal-789",
                         "email": "learner@example.com", "user_id": 4711, "term_id": 157, "order_id": 90211,
                         "key_id": 388120, "date_start": "2026-11-24", "date_end": "2027-05-24", "is_unlimited": False,
                         "key_ids": [388120, 388121],
                         "keys": [{"key_id": 388120, "term_id": 157, "date_start": "2026-11-24", "date_end": "2027-05-24"},
                                  {"key_id": 388121, "term_id": 157, "date_start": "2027-05-24", "date_end": "2027-11-24"}]},
    "grant.failed": {"grant_id": "g01m86gth2rav8thwdmvpj8", "channel": "api", "external_id": "deal-789",
                     "email": "learner@example.com", "term_id": 157, "error": "no key product for level 157"},
    "grant.unsettled": {"grant_id": "g01m86gth2rav8thwdmvpj8", "channel": "api", "external_id": "deal-789",
                        "email": "learner@example.com", "term_id": 157, "status": "unknown", "orders_sent": 1,
                        "since": "2026-11-24T10:22:56Z", "error": "outcome unknown: no answer within 90 s"},
    "program.step_granted": {"program_id": 3, "program_name": "Английский с нуля до бизнеса", "enrolment_id": 41,
                             "user_id": 4711, "completed_step": 1, "completed_level": 10, "granted_step": 2,
                             "granted_level": 7, "granted_duration": 2, "granted_units": "months",
                             "grant_id": "g01m86gth3b1k0q2x9w5fz7", "certificate_id": 1248733, "total_steps": 3},
    "program.completed": {"program_id": 3, "program_name": "Английский с нуля до бизнеса", "enrolment_id": 41,
                          "user_id": 4711, "completed_step": 3, "completed_level": 9, "certificate_id": 1251002,
                          "total_steps": 3},
    "reminder.sent": {"reminder_id": 5531, "user_id": 4711, "term_id": 12, "expired_on": "2026-11-24", "step": 1,
                      "message_id": "<176423044131.12345.8871@school.example>"},
    "reminder.failed": {"reminder_id": 5532, "user_id": 4711, "term_id": 12, "expired_on": "2026-11-24", "step": 1,
                        "reason": "smtp_permanent", "error": "550 mailbox unavailable"},
    "sleeper.detected": {"user_id": 4711, "term_id": 12, "expired_on": "2026-11-25", "email": "learner@example.com"},
    "access.activated": {"user_id": 4711, "email": "learner@example.com", "term_id": 157,
                         "level_name": "Английский с нуля", "key_id": 388120, "date_start": "2026-11-24",
                         "date_end": "2027-05-24", "is_unlimited": False, "activated_on": "2026-11-24",
                         "memberlux_source": "activation_page", "source": "key_scan"},
    "access.expired": {"user_id": 4711, "email": "learner@example.com", "term_id": 12,
                       "level_name": "Английский с нуля", "expired_on": "2026-11-25", "last_grant": "2026-05-25",
                       "blocked": False, "certificate_class": None},
    "certificate.issued": {"certificate_id": 1251002, "user_id": 4711, "email": "learner@example.com", "term_id": 9,
                           "level_name": "Business English", "certificate_class": "manual",
                           "date_issue": "2026-12-20", "create_date": "2026-12-20"},
    TEST_EVENT: {"endpoint_id": 1, "requested_by": "admin"},
}


def sample_body(event_type: str) -> dict[str, Any]:
    """The whole standard body of an example event of ``event_type``."""
    return {"id": "evt_5c1e0f3a9b7d2e4f6a8c0b1d", "type": event_type, "timestamp": "2026-11-24T10:15:09.120433Z",
            "data": SAMPLE_DATA[event_type]}
