"""Helpers of the program tests: the small site's levels and a school (site, store, app, signed-in admin)."""

from __future__ import annotations

import requests
import sqlalchemy as sa

from sidecar.domain.programs import Step
from sidecar.monitor.certificates import CertificateClassifier
from sidecar.programs.catalog import ProgramCatalog, ProgramDefinition
from sidecar.programs.progression import Progression
from sidecar.store.models import AuditEvent
from sidecar.store.program_models import Enrolment
from tests.admin_pages import AdminBrowser

YOGA, ENGLISH, TRAVEL, BUSINESS = 10, 7, 8, 9   # small site levels: 10 and 7 manual certificates, 9 auto


class School(AdminBrowser):
    """The emulated site, a store, the sidecar app and a signed-in administrator."""

    token_page = "/programs"

    def __init__(self, runtime, emulator, pages) -> None:
        self.base_url, self.api_user, self.api_password, self.engine = emulator
        self.catalog = ProgramCatalog(runtime)
        self.progression = Progression(runtime)
        CertificateClassifier(runtime).sync()   # the site's certificates so far are history
        super().__init__(runtime, pages)

    # --- the site ---

    def program(self, *levels: int, **extra) -> int:
        steps = tuple(Step(level, 1, "months") for level in levels)
        return self.catalog.create(ProgramDefinition(name=extra.pop("name", "Английский шаг за шагом"), steps=steps,
                                                     **extra), actor="test").id

    def learners(self, count: int = 1) -> list[int]:
        """Learners with no key of the program levels yet."""
        tk = sa.table("wp_memberlux_term_keys", sa.column("user_id"), sa.column("term_id"))
        with self.engine.connect() as conn:
            busy = set(conn.execute(sa.select(tk.c.user_id).where(tk.c.term_id.in_([YOGA, ENGLISH, TRAVEL]))).scalars())
        found = [u for u in range(4, 61) if u not in busy and self.runtime.reader.user(u)
                 and not self.runtime.reader.user(u).blocked]
        assert len(found) >= count
        return found[:count]

    def certify(self, user_id: int, level: int) -> int:
        answer = requests.post(self.base_url + "/devstack/certificates", json={"user_id": user_id, "level_id": level},
                               auth=(self.api_user, self.api_password), timeout=10)
        assert answer.status_code in (200, 201), answer.text
        return int(answer.json()["certificate_id"])

    def enrolments(self, program_id: int) -> list[Enrolment]:
        with self.runtime.sessions() as session:
            return list(session.scalars(sa.select(Enrolment).where(Enrolment.program_id == program_id)
                                        .order_by(Enrolment.id)))

    def audit(self, action: str) -> list[AuditEvent]:
        with self.runtime.sessions() as session:
            return list(session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action)))
