"""A small stand-in for amoCRM API v4: the two reads the bridge makes, with amoCRM's shapes and quirks.

Quirks reproduced: ``custom_fields_values`` is ``null`` when an entity has no custom fields; linked
contacts appear under ``_embedded.contacts`` only with ``?with=contacts``; a missing entity answers
``204 No Content``; a bad token answers 401 with a problem+json body.

Fault toggles in ``app.config``: ``FAIL_NEXT`` = n makes the next n requests answer ``FAIL_STATUS``
(503 unless changed); ``DELAY`` = seconds to wait before answering. ``REQUESTS`` records
``(path, query string)`` of every request that passed authentication (failed ones included).
``app.extensions["fake_amocrm_reset"]()`` restores the defaults, for a server shared between tests.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

from flask import Flask, Response, jsonify, request

FIELD_IDS = {
    "course": 501001,
    "duration": 501002,
    "units": 501003,
    "start": 501004,
    "phone": 601001,
    "email": 601002,
}
UNIT_ENUMS = {"дней": 7001, "месяцев": 7002, "days": 7003, "months": 7004}
ACCOUNT_ID = 31000001
BASE_TIME = 1767000000


def _field(field_id: int, name: str, field_type: str, values: list[dict[str, Any]],
           code: str | None = None) -> dict[str, Any]:
    return {"field_id": field_id, "field_name": name, "field_code": code, "field_type": field_type,
            "values": values}


def make_lead(lead_id: int, course: str | None = "Основы управления (157)", duration: str | None = "6",
              units: str | None = "месяцев", start: str | None = "1767225600",
              contact_ids: list[int] | None = None, pipeline_id: int = 7000001, status_id: int = 142,
              extra_fields: list[dict[str, Any]] | None = None, name: str | None = None) -> dict[str, Any]:
    """A lead as ``GET /api/v4/leads/{id}?with=contacts`` returns it. ``None`` leaves a field out; with no
    fields at all ``custom_fields_values`` is ``null``. A digits-only ``start`` becomes a date field with
    unix seconds (amoCRM's format), anything else a text field."""
    fields: list[dict[str, Any]] = list(extra_fields or [])
    if course is not None:
        fields.append(_field(FIELD_IDS["course"], "Курс", "text", [{"value": course}]))
    if duration is not None:
        fields.append(_field(FIELD_IDS["duration"], "Срок выдачи", "text", [{"value": duration}]))
    if units is not None:
        value: dict[str, Any] = {"value": units}
        if units in UNIT_ENUMS:
            value["enum_id"] = UNIT_ENUMS[units]
        fields.append(_field(FIELD_IDS["units"], "Тип срока", "select", [value]))
    if start is not None:
        if start.isdigit():
            fields.append(_field(FIELD_IDS["start"], "Дата старта", "date", [{"value": int(start)}]))
        else:
            fields.append(_field(FIELD_IDS["start"], "Дата старта", "text", [{"value": start}]))
    return {
        "id": lead_id,
        "name": name if name is not None else f"Сделка #{lead_id}",
        "price": 15000,
        "responsible_user_id": 9000001,
        "group_id": 0,
        "status_id": status_id,
        "pipeline_id": pipeline_id,
        "loss_reason_id": None,
        "created_by": 9000001,
        "updated_by": 9000001,
        "created_at": BASE_TIME,
        "updated_at": BASE_TIME + 60,
        "closed_at": None,
        "closest_task_at": None,
        "is_deleted": False,
        "custom_fields_values": fields or None,
        "score": None,
        "account_id": ACCOUNT_ID,
        "labor_cost": None,
        "_links": {"self": {"href": f"https://example.amocrm.ru/api/v4/leads/{lead_id}"}},
        "_embedded": {
            "tags": [],
            "companies": [],
            "contacts": [
                {"id": cid, "is_main": index == 0,
                 "_links": {"self": {"href": f"https://example.amocrm.ru/api/v4/contacts/{cid}"}}}
                for index, cid in enumerate(contact_ids or [])
            ],
        },
    }


def make_contact(contact_id: int, email: str | list[str] | None = None, name: str = "Иван Петров",
                 phone: str | None = None, first_name: str | None = None,
                 last_name: str | None = None) -> dict[str, Any]:
    """A contact as ``GET /api/v4/contacts/{id}`` returns it. ``email`` may list several values (amoCRM's
    multitext field); ``first_name``/``last_name`` default to empty, as for contacts made by forms."""
    fields: list[dict[str, Any]] = []
    if phone is not None:
        fields.append(_field(FIELD_IDS["phone"], "Телефон", "multitext",
                             [{"value": phone, "enum_id": 8001, "enum_code": "WORK"}], code="PHONE"))
    if email is not None:
        emails = [email] if isinstance(email, str) else email
        fields.append(_field(FIELD_IDS["email"], "Email", "multitext",
                             [{"value": e, "enum_id": 8101, "enum_code": "WORK"} for e in emails], code="EMAIL"))
    return {
        "id": contact_id,
        "name": name,
        "first_name": first_name or "",
        "last_name": last_name or "",
        "responsible_user_id": 9000001,
        "group_id": 0,
        "created_by": 9000001,
        "updated_by": 9000001,
        "created_at": BASE_TIME,
        "updated_at": BASE_TIME,
        "closest_task_at": None,
        "is_deleted": False,
        "is_unsorted": False,
        "custom_fields_values": fields or None,
        "account_id": ACCOUNT_ID,
        "_links": {"self": {"href": f"https://example.amocrm.ru/api/v4/contacts/{contact_id}"}},
        "_embedded": {"tags": [], "companies": []},
    }


def _problem(status: int, title: str, detail: str) -> Response:
    response = jsonify({"title": title, "type": "https://httpstatus.es/" + str(status), "status": status,
                        "detail": detail})
    response.status_code = status
    response.content_type = "application/problem+json"
    return response


def create_fake_amocrm(leads: dict[int, dict], contacts: dict[int, dict], token: str) -> Flask:
    app = Flask("fake_amocrm")
    app.config.update(FAIL_NEXT=0, FAIL_STATUS=503, DELAY=0.0, REQUESTS=[])
    lock = threading.Lock()

    @app.before_request
    def _auth_and_faults() -> Response | None:
        # Faults are decided when a request arrives and the delay comes last, so a request still
        # sleeping after its client gave up cannot consume a fault or a record meant for a later test.
        if request.headers.get("Authorization") != f"Bearer {token}":
            return _problem(401, "Unauthorized", "Неверный логин или пароль")
        with lock:
            app.config["REQUESTS"].append((request.path, request.query_string.decode()))
            failing = app.config.get("FAIL_NEXT", 0) > 0
            if failing:
                app.config["FAIL_NEXT"] -= 1
            status = int(app.config.get("FAIL_STATUS", 503))
            delay = float(app.config.get("DELAY") or 0)
        if delay:
            time.sleep(delay)
        if failing:
            response = _problem(status, "Service Unavailable" if status == 503 else "Error", "injected fault")
            if status == 429:
                response.headers["Retry-After"] = "7"
            return response
        return None

    def reset() -> None:
        """Back to a healthy server with no recorded requests (the data dicts are left to the caller)."""
        with lock:
            app.config.update(FAIL_NEXT=0, FAIL_STATUS=503, DELAY=0.0, REQUESTS=[])

    app.extensions["fake_amocrm_reset"] = reset

    @app.get("/api/v4/leads/<int:lead_id>")
    def get_lead(lead_id: int):
        lead = leads.get(lead_id)
        if lead is None:
            return Response(status=204)
        body = copy.deepcopy(lead)
        wanted = {part.strip() for part in request.args.get("with", "").split(",")}
        embedded = body.setdefault("_embedded", {})
        if "contacts" not in wanted:
            embedded.pop("contacts", None)
        return jsonify(body)

    @app.get("/api/v4/contacts/<int:contact_id>")
    def get_contact(contact_id: int):
        contact = contacts.get(contact_id)
        if contact is None:
            return Response(status=204)
        return jsonify(contact)

    return app
