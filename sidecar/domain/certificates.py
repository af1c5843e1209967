"""Auto or manual: which certificates mean "an admin or coach judged this learner" (pure, no I/O).

The certificate row has no type column (core.md 4). The level decides: on ``auto`` levels
MemberLux issues a certificate at *every* key activation (renewals and REST grants included), so
such certificates say nothing about learning. A certificate on an ``auto`` level is still manual
when its printed issue date differs from its insert date (the admin picked a date) or when no
activation of that user and level happened on its insert day (legacy-plugins.md §3.8).
Classify each row once and persist the class: the level's mode can change later.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

LEVEL_MODE_AUTO = "auto"


class CertificateClass(enum.Enum):
    AUTO = "auto"
    MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    certificate_id: int
    user_id: int
    level_id: int
    date_issue: date | None
    create_date: date | None


@dataclass(frozen=True, slots=True)
class Classification:
    cls: CertificateClass
    reason: str


def classify_certificate(cert: CertificateFacts, level_mode: str | None,
                         activation_days: Iterable[date]) -> Classification:
    """``level_mode``: termmeta ``_mblc_how_to_issue`` of the level now (None/other = ``employee``).

    ``activation_days``: UTC days on which keys of (user, level) were activated — the date of
    ``keys_meta.activation_datetime``, else ``date_registered``; never ``date_start`` (in the future
    for stacked renewals).
    """
    if (level_mode or "").strip() != LEVEL_MODE_AUTO:
        return Classification(CertificateClass.MANUAL, "level issues certificates by hand")
    if cert.date_issue is None or cert.create_date is None:
        return Classification(CertificateClass.MANUAL, "issue or insert date missing: not written by auto issue")
    if cert.date_issue != cert.create_date:
        return Classification(CertificateClass.MANUAL, "issue date chosen differs from the insert date")
    if cert.create_date not in set(activation_days):
        return Classification(CertificateClass.MANUAL, "no activation of this level by the user that day")
    return Classification(CertificateClass.AUTO, "issued with a key activation on an auto level")
