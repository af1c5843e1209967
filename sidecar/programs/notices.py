"""What a program's legacy consumers receive, now through the signed, retried webhook outbox.

* ``legacy_bundle``: the body the old plugin POSTed to ``mlp_webhook_url`` (legacy-plugins.md §2.5),
  unchanged for its consumers, now with Standard Webhooks signature headers and retries.
* ``program_notice``: the admin e-mails of ``mlp_notify_*`` with the legacy ``[placeholders]``, sent
  as proper HTML with a plain-text part (the plugin sent HTML as plain text, §2.6 defect 13).
"""

from __future__ import annotations

import json
from typing import Any

from markupsafe import escape

from sidecar.bootstrap import Runtime
from sidecar.mail.mailer import Mail
from sidecar.mail.templates import html_to_text
from sidecar.store.program_models import Program
from sidecar.store.webhook_models import WebhookEndpoint, WebhookEvent
from sidecar.webhooks.formats import Rendered, register_format

PLACEHOLDERS = ("user_id", "user_email", "user_login", "display_name", "program_id", "program_title",
                "current_term_id", "current_course", "current_step", "total_steps", "next_term_id", "next_course",
                "next_step", "duration", "units")


def placeholder_values(runtime: Runtime, event: WebhookEvent) -> dict[str, str]:
    """The legacy placeholders' values; next_* are empty/0 on completion, as the plugin sent them."""
    data = event.data
    user = runtime.reader.user(int(data["user_id"]))
    names = {level.term_id: level.name for level in runtime.reader.levels()}
    granted = event.type == "program.step_granted"
    with runtime.sessions() as session:
        program = session.get(Program, int(data["program_id"]))
        legacy_id = program.legacy_post_id if program is not None and program.legacy_post_id else data["program_id"]
    return {
        "user_id": str(data["user_id"]), "user_email": user.email if user else "", "user_login": user.login if user else "",
        "display_name": user.display_name if user else "", "program_id": str(legacy_id),
        "program_title": str(data.get("program_name", "")), "current_term_id": str(data["completed_level"]),
        "current_course": names.get(int(data["completed_level"]), ""), "current_step": str(data["completed_step"]),
        "total_steps": str(data.get("total_steps", "")),
        "next_term_id": str(data["granted_level"]) if granted else "0",
        "next_course": names.get(int(data["granted_level"]), "") if granted else "",
        "next_step": str(data["granted_step"]) if granted else "0",
        "duration": str(data.get("granted_duration", "")) if granted else "",
        "units": str(data.get("granted_units", "")) if granted else "",
    }


def fill(template: str, values: dict[str, str], *, html: bool) -> str:
    for name in PLACEHOLDERS:
        value = values.get(name, "")
        template = template.replace(f"[{name}]", str(escape(value)) if html else value)
    return template


def legacy_bundle(runtime: Runtime, _endpoint: WebhookEndpoint, event: WebhookEvent) -> Rendered:
    values = placeholder_values(runtime, event)
    granted = event.type == "program.step_granted"
    payload: dict[str, Any] = {
        "user_id": int(values["user_id"]), "program_id": int(values["program_id"]),
        "current_term_id": int(values["current_term_id"]), "next_term_id": int(values["next_term_id"]),
        "event": "step_granted" if granted else "program_completed",
        "context": {"current_step": int(values["current_step"]), "next_step": int(values["next_step"]),
                    "total_steps": int(values["total_steps"] or 0),
                    "duration": int(values["duration"]) if values["duration"] else 0, "units": values["units"]},
    }
    return Rendered(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def program_notice(runtime: Runtime, endpoint: WebhookEndpoint, event: WebhookEvent) -> Rendered:
    values = placeholder_values(runtime, event)
    with runtime.sessions() as session:
        program = session.get(Program, int(event.data["program_id"]))
    granted = event.type == "program.step_granted"
    subject_t = (program.notify_step_subject if granted else program.notify_complete_subject) if program else ""
    body_t = (program.notify_step_body if granted else program.notify_complete_body) if program else ""
    subject = " ".join(fill(subject_t or "ML Program Update", values, html=False).split())
    if body_t.strip():
        html = fill(body_t, values, html=True)
    elif granted:
        html = fill("<p>[display_name] ([user_email]) passed «[current_course]» (step [current_step] of [total_steps]) "
                    "in «[program_title]» and was granted «[next_course]» for [duration] [units].</p>", values, html=True)
    else:
        html = fill("<p>[display_name] ([user_email]) completed «[program_title]» ([total_steps] steps).</p>",
                    values, html=True)
    return Rendered(mail=Mail(to=endpoint.url, subject=subject, html=html, text=html_to_text(html),
                              headers={"Auto-Submitted": "auto-generated"}))


register_format("legacy_bundle", legacy_bundle)
register_format("program_notice", program_notice)
