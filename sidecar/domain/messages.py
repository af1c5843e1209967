"""What the rules and imports report, as a code with parameters rather than a finished sentence.

The CLI and the logs print :meth:`Message.english` (the sentences they always printed); the web
pages look the code up in their own table and show the catalog's wording in the page's language,
with level ids turned into names. :data:`ENGLISH` is the one registry of every code: a code not in
it cannot be made, and a test checks that each one has a translation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ENGLISH: dict[str, str] = {
    # A program definition (sidecar.domain.programs.check_program and the catalog's checks).
    "programs.name_missing": "a program needs a name",
    "programs.no_steps": "a program needs at least one step",
    "programs.too_many_steps": "at most {max} steps",
    "programs.unknown_level": "access level {id} does not exist",
    "programs.duration_not_positive": "the duration must be a positive number",
    "programs.bad_units": "units must be one of {units}",
    "programs.too_many_years": "at most {max} years",
    "programs.no_certificates": "level {level} issues no certificates: learners cannot pass this step",
    "programs.cascade": "step {step} (level {level}) issues certificates automatically at every activation: "
                        "counting every certificate would grant the next step at once and cascade through the "
                        "program; count manual certificates only",
    "programs.auto_level": "level {level} issues certificates automatically; only a certificate issued by hand "
                           "on it will advance learners",
    "programs.repeated_level": "level {level} is also step {step}: a certificate for it advances whichever of "
                               "the two steps the learner is on",
    "programs.keep_steps": "learners are on step {step}: keep at least {step} steps",
    "programs.no_product": "no WooCommerce key product grants level {level} for {duration} {units}: learners "
                           "will wait at this step until one exists",
    # A certificate kept in the inbox; the detail is the grant bridge's own reason.
    "programs.step_waits": "step {step} cannot be granted: {detail}",
    # The legacy import's notes, problems and evidence (sidecar.programs.legacy).
    "programs.legacy.first_duration": "step 1's duration is not taken from the legacy form (it always stored "
                                      "1 month); enrolment does not grant step 1 unless you switch it on",
    "programs.legacy.not_published": "the post is '{status}': imported archived (the plugin ignored the status)",
    "programs.legacy.unserialize": "mlp_steps of program {post} is not valid PHP-serialized data ({detail})",
    "programs.legacy.not_list": "mlp_steps of program {post} is not a non-empty list of steps",
    "programs.legacy.step_not_array": "step {step} of program {post} is not an array with term_id/duration/units",
    "programs.legacy.step_not_numeric": "step {step} of program {post} has a non-numeric term_id or duration: "
                                        "{detail}",
    "programs.legacy.no_program": "mlp_program_id {post} is not an ml_program post (deleted program?)",
    "programs.legacy.no_user": "the user no longer exists",
    "programs.legacy.step_not_number": "mlp_current_step '{value}' is not a number",
    "programs.legacy.step_outside": "mlp_current_step {value} is outside the program's {total} steps",
    "programs.legacy.evidence_index": "mlp_current_step: step {step}",
    "programs.legacy.evidence_keys": "program_flow keys: step {step}",
    "programs.legacy.evidence_certificate": "last certificate: step {step}",
    "programs.legacy.hash_unmatched": "mlp_last_certificate_hash matches no certificate of the user (deleted?)",
    "programs.legacy.disagree": "the sources disagree; the furthest step is taken",
    # Why a letter template cannot be used (sidecar.mail.templates, sidecar.reminders.letters); the
    # details are Jinja's own words.
    "templates.syntax": "{detail}",
    "templates.unknown_variable": "unknown variable '{name}' (known: {known})",
    "templates.too_large": "template output exceeds {kb} KB",
    "templates.too_much_work": "template does too much work",
    "templates.range_too_long": "template does too much work (range is limited to {max} numbers)",
    "templates.undefined": "{detail}",
    "templates.undefined_value": "undefined value",
    "templates.failed": "{detail}",
    # A level's reminder settings (sidecar.monitor.settings.validate); a template's reason is a message.
    "settings.negative_days": "days after expiry cannot be negative",
    "settings.negative": "cannot be negative",
    "settings.no_subject": "a letter needs a subject",
    "settings.no_body": "a letter needs a body",
    "settings.days_without_subject": "a letter with days needs a subject",
    "settings.days_without_body": "a letter with days needs a body",
    "settings.text_without_days": "a letter with a subject or body needs its days after expiry",
    "settings.not_later": "must be later than letter {n} ({days} days)",
    "settings.admin_without_days": "the admin digest needs its days after the last letter",
    "settings.admin_email_required": "an administrator address is required for the admin digest",
    "settings.bad_email": "not an e-mail address",
    "settings.template_at_line": "template error at line {line}: {reason}",
    "settings.template": "template error: {reason}",
    # A grant request's fields (sidecar.domain.grants.validate_grant; the API answers with this English).
    "grants.email_required": "e-mail is required",
    "grants.email_invalid": "not a usable e-mail address (at most {max} characters, {local} before the @)",
    "grants.level_required": "access level (term_id) is required",
    "grants.level_invalid": "term_id must be a positive integer (at most {max})",
    "grants.units_invalid": "units must be day(s), month(s) or year(s) (Russian words accepted too)",
    "grants.duration_required": "duration is required",
    "grants.duration_not_number": "duration must be a whole number",
    "grants.duration_not_positive": "duration must be positive (0 would grant no access at all)",
    "grants.duration_too_long": "duration is more than ten years ({limit} {units})",
    "grants.no_such_level": "no such wpm-levels term",
    # Why a grant is not (yet) delivered: its last error (sidecar.bridge.outbox, sidecar.bridge.service).
    "grants.invalid_fields": "the request has invalid fields",
    "grants.unknown_level": "access level {id} does not exist on the site",
    "grants.no_product": "no WooCommerce mbl_key product grants level {level} for {duration} {units}; products of "
                         "this level: {products}",
    "grants.no_products": "no WooCommerce mbl_key product grants level {level} for {duration} {units}; the level "
                          "has no mbl_key product (create one, or map it in bridge.product_overrides)",
    "grants.lead_rejected": "amoCRM lead {lead}: {reason}",
    "grants.lead_rejected_fields": "amoCRM lead {lead}: {reason}; {fields}",
    "grants.lead_unreadable": "amoCRM lead {lead}: {detail}",
    "grants.crm_error": "amoCRM: {detail}",
    "grants.gave_up": "gave up after {attempts} attempts over {hours} h; last error: {reason}",
    "grants.refused": "MemberLux refused the order: {detail}",
    "grants.unknown_outcome": "outcome unknown: {detail}",
    "grants.unreachable": "site unreachable: {detail}",
    "grants.rival": "waiting for grant {rival} of the same customer: WordPress would create the account twice if "
                    "both orders ran at once",
    "grants.no_key_after_order": "order {order} was accepted but no key carries utm_id {grant} and no other trace "
                                 "of it shows; check that the MEMBERLUX PAYMENTS add-on is active and its "
                                 "auto-activation is on (mlsidecar doctor). The grant is not ordered again.",
    "grants.not_found_after_order": "{reason} ({payments}): check that the MEMBERLUX PAYMENTS add-on is active and "
                                    "its auto-activation is on (mlsidecar doctor). The grant is not ordered again; "
                                    "retry it once the site is fixed.",
    "grants.duplicated": "{count} keys carry this grant's id: {keys}",
    "grants.cancelled": "cancelled by {actor}",
    # A webhook endpoint refused (sidecar.webhooks.endpoints and the destination check, sidecar.webhooks.ssrf).
    "webhooks.name_required": "a name of 1–100 characters is required",
    "webhooks.bad_events": "choose '*' or some of: {events}",
    "webhooks.bad_template": "{detail}",
    "webhooks.url_not_http": "{url} is not an http(s) URL",
    "webhooks.url_credentials": "credentials in the URL are not allowed (they would be logged); use the signature",
    "webhooks.url_unresolved": "{host} does not resolve",
    "webhooks.url_unresolved_why": "{host} does not resolve ({detail})",
    "webhooks.url_internal": "{host} resolves to {address}, an internal address; add it to "
                             "webhooks.allow_private_destinations if this is intended",
    "webhooks.url_other_host": "{host} is not the checked host {checked}",
    "webhooks.from_config": "this endpoint comes from the configuration file; change it there",
    "webhooks.secret_in_config": "rotate it in the configuration file (secret + previous_secret)",
    # What the worker made of a MemberLux webhook (sidecar.webhooks.inbound).
    "inbound.unknown_type": "ignored: unknown type {type}",
    "inbound.no_user": "unconfirmed: no such user",
    "inbound.no_level": "unconfirmed: no level in the payload",
    "inbound.no_key": "unconfirmed: user {user} has no activated key of level {level}",
    "inbound.confirmed": "confirmed: user {user}, level {level}",
    "inbound.confirmed_enrolled": "confirmed: user {user}, level {level}; enrolled in {n} program(s)",
}


@dataclass(frozen=True)
class Message:
    """One finding: ``code`` from :data:`ENGLISH`, ``params`` the values its sentence names (a value may
    itself be a message, or a list of messages read as one "; "-separated text: a template's reason
    inside a settings error, a request's field errors).

    ``field`` names what the finding is about when it came from a form's rule ("steps.2.term_id");
    the English sentence is then prefixed with it, as the import always printed such findings.
    """

    code: str
    params: Mapping[str, Any] = field(default_factory=dict)
    field: str = ""

    def __post_init__(self) -> None:
        if self.code not in ENGLISH:
            raise ValueError(f"unknown message code {self.code!r}")

    def english(self) -> str:
        text = ENGLISH[self.code].format(**{name: _english(value) for name, value in self.params.items()})
        return f"{self.field}: {text}" if self.field else text

    __str__ = english

    def as_dict(self) -> dict[str, Any]:
        """The message as JSON-ready data, to be kept next to its English sentence (:func:`from_dict`)."""
        return {"code": self.code, "params": {name: _data(value) for name, value in self.params.items()},
                "field": self.field}

    def stored(self) -> str:
        """The message as text for a column that used to hold the English sentence (:func:`from_stored`)."""
        return json.dumps(self.as_dict(), ensure_ascii=False, sort_keys=True)


def is_messages(value: Any) -> bool:
    """A parameter that is a list of messages (read as one text)."""
    return isinstance(value, list) and bool(value) and all(isinstance(item, Message) for item in value)


def _english(value: Any) -> Any:
    return "; ".join(item.english() for item in value) if is_messages(value) else value


def _data(value: Any) -> Any:
    if isinstance(value, Message):
        return value.as_dict()
    return [item.as_dict() for item in value] if is_messages(value) else value


def from_dict(data: Any) -> Message | None:
    """A message kept by :meth:`Message.as_dict`; None for anything else (a code this version does
    not know, a value written before codes): the caller then shows the English it kept."""
    try:
        params = {name: _nested(value) for name, value in dict(data["params"]).items()}
        message = Message(data["code"], params, str(data.get("field") or ""))
        message.english()   # its parameters fit this version's sentence
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    return message


def _nested(value: Any) -> Any:
    if isinstance(value, list):
        return [_nested(item) for item in value]
    if isinstance(value, dict) and "code" in value:
        found = from_dict(value)
        if found is None:
            raise ValueError("a message inside that this version cannot read")
        return found
    return value


def from_stored(text: str | None) -> Message | str:
    """A message written by :meth:`Message.stored`, or the text itself for a row written before codes:
    shown as written, never lost."""
    if not text or not text.startswith("{"):
        return text or ""
    try:
        found = from_dict(json.loads(text))
    except ValueError:
        return text
    return found if found is not None else text
