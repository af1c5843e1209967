"""Messages of the domain and the imports (:class:`sidecar.domain.messages.Message`) in the page's language.

Each code has its own entry below calling the catalog with a literal key, so the catalog's wording
and placeholders are plain to see (and to extract); level ids become level names on the way. A code
without an entry, or a message whose parameters do not fit its entry (written by another version),
is shown in English as the CLI prints it: nothing is hidden. A test checks that every code of the
registry has an entry here and a wording in both languages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from sidecar.domain.messages import Message, is_messages
from sidecar.web.i18n import gettext, ngettext, pgettext


class Names(Protocol):
    """What a page knows to name the values of a message."""

    def level_label(self, term_id: int) -> str: ...

    def term(self, duration: int, units: str) -> str: ...


class _NoNames:
    """For pages whose messages name no level or term (a code that does gets the bare values)."""

    @staticmethod
    def level_label(term_id: int) -> str:
        return f"#{term_id}"

    @staticmethod
    def term(duration: int, units: str) -> str:
        return f"{duration} {units}"


Params = Mapping[str, Any]
Render = Callable[[Params, Names], str]

TEXTS: dict[str, Render] = {
    "programs.name_missing": lambda p, n: gettext("A program needs a name."),
    "programs.no_steps": lambda p, n: gettext("A program needs at least one step."),
    "programs.too_many_steps": lambda p, n: gettext("At most {max} steps.", max=p["max"]),
    "programs.unknown_level": lambda p, n: gettext("Access level #{id} does not exist on the site.", id=p["id"]),
    "programs.duration_not_positive": lambda p, n: gettext("The duration must be a positive whole number."),
    "programs.bad_units": lambda p, n: gettext("Units must be one of: {units}.", units=p["units"]),
    "programs.too_many_years": lambda p, n: gettext("At most {max} years.", max=p["max"]),
    "programs.no_certificates": lambda p, n: gettext("{level} issues no certificates: learners cannot pass this step.",
                                                       level=n.level_label(p["level"])),
    "programs.cascade": lambda p, n: gettext("Step {step} ({level}) issues certificates automatically at every activation: counting every "
                                             "certificate would grant the next step at once and cascade through the program. Count "
                                             "certificates issued by hand only.", step=p["step"],
                                               level=n.level_label(p["level"])),
    "programs.auto_level": lambda p, n: gettext("{level} issues certificates automatically; only a certificate issued by hand on it will "
                                                "move learners on.", level=n.level_label(p["level"])),
    "programs.repeated_level": lambda p, n: gettext("{level} is also step {step}: its certificate moves on whichever of the two steps the "
                                                    "learner is on.", step=p["step"],
                                                      level=n.level_label(p["level"])),
    "programs.keep_steps": lambda p, n: gettext("Learners are on step {step}: keep at least {step} steps.", step=p["step"]),
    "programs.no_product": lambda p, n: gettext("No WooCommerce key product grants {level} for {term}: learners will wait at this step "
                                                "until one exists.", level=n.level_label(p["level"]),
                                                  term=n.term(p["duration"], p["units"])),
    "programs.step_waits": lambda p, n: gettext("Step {step} cannot be granted yet: {detail}", step=p["step"], detail=p["detail"]),
    "programs.legacy.first_duration": lambda p, n: gettext("Step 1's duration is not taken from the legacy form (it always stored 1 "
                                                           "month); enrolling does not grant step 1 unless you switch it on."),
    "programs.legacy.not_published": lambda p, n: gettext("The post is '{status}': imported as archived (the plugin ignored the status).",
                                                            status=p["status"]),
    "programs.legacy.unserialize": lambda p, n: gettext("mlp_steps of post {post} is not valid "
                                                        "PHP-serialized data ({detail}).", post=p["post"],
                                                          detail=p["detail"]),
    "programs.legacy.not_list": lambda p, n: gettext("mlp_steps of post {post} is not a non-empty list of steps.", post=p["post"]),
    "programs.legacy.step_not_array": lambda p, n: gettext("Step {step} of post {post} is not an array with term_id/duration/units.",
                                                             step=p["step"], post=p["post"]),
    "programs.legacy.step_not_numeric": lambda p, n: gettext("Step {step} of post {post} has a non-numeric term_id or duration: {detail}",
                                                               step=p["step"], post=p["post"], detail=p["detail"]),
    "programs.legacy.no_program": lambda p, n: gettext("mlp_program_id {post} is not an ml_program "
                                                       "post (a deleted program?).", post=p["post"]),
    "programs.legacy.no_user": lambda p, n: pgettext("programs.legacy.problem", "The user no longer exists."),
    "programs.legacy.step_not_number": lambda p, n: gettext("mlp_current_step '{value}' is not a number.",
                                                              value=p["value"]),
    "programs.legacy.step_outside": lambda p, n: gettext("mlp_current_step {value} is outside the "
                                                         "program's {total} steps.", value=p["value"],
                                                           total=p["total"]),
    "programs.legacy.evidence_index": lambda p, n: gettext("mlp_current_step says step {step}", step=p["step"]),
    "programs.legacy.evidence_keys": lambda p, n: gettext("keys granted by the plugin (program_flow) reach step {step}", step=p["step"]),
    "programs.legacy.evidence_certificate": lambda p, n: gettext("the last certificate counted leads to step {step}",
                                                                   step=p["step"]),
    "programs.legacy.hash_unmatched": lambda p, n: gettext("mlp_last_certificate_hash matches no certificate of the user (deleted?)"),
    "programs.legacy.disagree": lambda p, n: gettext("the sources disagree; the furthest step is taken"),
    "templates.syntax": lambda p, n: gettext("syntax error (Jinja says: {detail})", detail=p["detail"]),
    "templates.unknown_variable": lambda p, n: gettext("unknown variable «{name}» (see the list of variables)", name=p["name"]),
    "templates.too_large": lambda p, n: gettext("the letter would be longer than {kb} KB (the limit of a rendered template)", kb=p["kb"]),
    "templates.too_much_work": lambda p, n: gettext("the template does too much work (loops or text operations too large for a letter)"),
    "templates.range_too_long": lambda p, n: gettext("the template does too much work (a range gives at most {max} numbers)", max=p["max"]),
    "templates.undefined": lambda p, n: gettext("the template uses a value that is not defined (Jinja says: {detail})", detail=p["detail"]),
    "templates.undefined_value": lambda p, n: gettext("the value is not defined"),
    "templates.failed": lambda p, n: gettext("the template cannot be rendered ({detail})", detail=p["detail"]),
    "settings.negative_days": lambda p, n: gettext("Cannot be negative."),
    "settings.negative": lambda p, n: gettext("Cannot be negative."),
    "settings.no_subject": lambda p, n: gettext("A letter needs a subject."),
    "settings.no_body": lambda p, n: gettext("A letter needs a body."),
    "settings.days_without_subject": lambda p, n: gettext("A letter with days needs a subject; empty its days to switch it off."),
    "settings.days_without_body": lambda p, n: gettext("A letter with days needs a body; empty its days to switch it off."),
    "settings.text_without_days": lambda p, n: gettext("A letter with a subject or body needs its days after expiry; empty the subject and "
                                                       "body to switch it off."),
    "settings.not_later": lambda p, n: ngettext("Must be later than letter {letter} ({n} day).",
                                                "Must be later than letter {letter} ({n} days).", p["days"], letter=p["n"]),
    "settings.admin_without_days": lambda p, n: gettext("The digest needs its days after the last letter; empty its subject and body to "
                                                        "switch it off."),
    "settings.admin_email_required": lambda p, n: gettext("An administrator address is required for the digest."),
    "settings.bad_email": lambda p, n: gettext("Not an e-mail address."),
    "settings.template_at_line": lambda p, n: gettext("Template error on line {line}: {reason}", line=p["line"],
                                                        reason=p["reason"]),
    "settings.template": lambda p, n: gettext("Template error: {reason}", reason=p["reason"]),
    "grants.email_required": lambda p, n: gettext("the e-mail is required"),
    "grants.email_invalid": lambda p, n: gettext("not a usable e-mail address (at most {max} characters, "
                                                 "{local} before the @)", max=p["max"], local=p["local"]),
    "grants.level_required": lambda p, n: gettext("the access level (term_id) is required"),
    "grants.level_invalid": lambda p, n: gettext("term_id must be a positive whole number (at most {max})", max=p["max"]),
    "grants.units_invalid": lambda p, n: gettext("units must be days, months or years (in English or Russian)"),
    "grants.duration_required": lambda p, n: gettext("the duration is required"),
    "grants.duration_not_number": lambda p, n: gettext("the duration must be a whole number"),
    "grants.duration_not_positive": lambda p, n: gettext("the duration must be positive (0 would grant no access at all)"),
    "grants.duration_too_long": lambda p, n: gettext("the duration is more than ten years ({term})",
                                                       term=n.term(p["limit"], p["units"])),
    "grants.no_such_level": lambda p, n: gettext("no such access level on the site"),
    "grants.invalid_fields": lambda p, n: gettext("the request has invalid fields"),
    "grants.unknown_level": lambda p, n: gettext("access level #{id} does not exist on the site", id=p["id"]),
    "grants.no_product": lambda p, n: gettext("no WooCommerce key product grants {level} for {term}; products "
                                              "of this level: {products}", level=n.level_label(p["level"]),
                                                term=n.term(p["duration"], p["units"]), products=p["products"]),
    "grants.no_products": lambda p, n: gettext("no WooCommerce key product grants {level} for {term}, and the level has none (create one, "
                                               "or map it in bridge.product_overrides)", level=n.level_label(p["level"]),
                                                 term=n.term(p["duration"], p["units"])),
    "grants.lead_rejected": lambda p, n: gettext("amoCRM lead {lead}: {reason}", lead=p["lead"], reason=p["reason"]),
    "grants.lead_rejected_fields": lambda p, n: gettext("amoCRM lead {lead}: {reason}; {fields}", lead=p["lead"],
                                                          reason=p["reason"], fields=p["fields"]),
    "grants.lead_unreadable": lambda p, n: gettext("amoCRM lead {lead}: {detail}", lead=p["lead"],
                                                     detail=p["detail"]),
    "grants.crm_error": lambda p, n: gettext("amoCRM error: {detail}", detail=p["detail"]),
    "grants.gave_up": lambda p, n: gettext("gave up (attempts: {attempts} over {hours} h); last "
                                           "error: {reason}", attempts=p["attempts"], hours=p["hours"],
                                             reason=p["reason"]),
    "grants.refused": lambda p, n: gettext("MemberLux refused the order: {detail}", detail=p["detail"]),
    "grants.unknown_outcome": lambda p, n: gettext("outcome unknown: {detail}", detail=p["detail"]),
    "grants.unreachable": lambda p, n: gettext("the site is unreachable: {detail}", detail=p["detail"]),
    "grants.rival": lambda p, n: gettext("waiting for grant {rival} of the same customer: WordPress would create the account twice if both "
                                         "orders ran at once", rival=p["rival"]),
    "grants.no_key_after_order": lambda p, n: gettext("order {order} was accepted but no key carries utm_id {grant} and no other trace of "
                                                      "it shows; check that the MEMBERLUX PAYMENTS add-on is active and its "
                                                      "auto-activation is on (mlsidecar doctor). The "
                                                      "grant is not ordered again.", order=p["order"],
                                                        grant=p["grant"]),
    "grants.not_found_after_order": lambda p, n: gettext("{reason} ({payments}): check that the MEMBERLUX PAYMENTS add-on is active and "
                                                         "its auto-activation is on (mlsidecar doctor). The grant is not ordered again; "
                                                         "retry it once the site is fixed.", reason=p["reason"],
                                                           payments=p["payments"]),
    "grants.duplicated": lambda p, n: gettext("keys carrying this grant's id ({count}): {keys}", count=p["count"], keys=p["keys"]),
    "grants.cancelled": lambda p, n: gettext("cancelled by {actor}", actor=p["actor"]),
    "webhooks.name_required": lambda p, n: gettext("A name of 1 to 100 characters is required."),
    "webhooks.bad_events": lambda p, n: gettext("Choose \"All events\" or at least one event type."),
    "webhooks.bad_template": lambda p, n: gettext("The template cannot be used: {detail}", detail=p["detail"]),
    "webhooks.url_not_http": lambda p, n: gettext("Enter an http:// or https:// address."),
    "webhooks.url_credentials": lambda p, n: gettext("No user name or password in the URL (they would be logged); "
                                                     "receivers check the signature."),
    "webhooks.url_unresolved": lambda p, n: gettext("{host} cannot be found in DNS. {detail}", host=p["host"], detail=""),
    "webhooks.url_unresolved_why": lambda p, n: gettext("{host} cannot be found in DNS. {detail}", host=p["host"],
                                                        detail=p["detail"]),
    "webhooks.url_internal": lambda p, n: gettext("{host} is an address inside our network ({address}); add it to "
                                                  "webhooks.allow_private_destinations if this is intended.",
                                                  host=p["host"], address=p["address"]),
    "webhooks.url_other_host": lambda p, n: gettext("The connection went to {host} instead of the checked host {checked}.",
                                                    host=p["host"], checked=p["checked"]),
    "webhooks.from_config": lambda p, n: gettext("This endpoint comes from the configuration file; change it there."),
    "inbound.unknown_type": lambda p, n: gettext("ignored: unknown type {type}", type=p["type"]),
    "inbound.no_user": lambda p, n: gettext("not confirmed: no such user"),
    "inbound.no_level": lambda p, n: gettext("not confirmed: no level in the payload"),
    "inbound.no_key": lambda p, n: gettext("not confirmed: user {user} has no activated key of {level}", user=p["user"],
                                           level=n.level_label(p["level"])),
    "inbound.confirmed": lambda p, n: gettext("confirmed: user {user}, {level}", user=p["user"],
                                              level=n.level_label(p["level"])),
    "inbound.confirmed_enrolled": lambda p, n: ngettext("confirmed: user {user}, {level}; enrolled in {n} program",
                                                        "confirmed: user {user}, {level}; enrolled in {n} programs", p["n"],
                                                        user=p["user"], level=n.level_label(p["level"])),
    "webhooks.secret_in_config": lambda p, n: gettext("Rotate this secret in the configuration file (secret and "
                                                      "previous_secret)."),
}

FieldLabel = Callable[[str], str]


def _inner(value: Any, names: Names, field_label: FieldLabel | None) -> Any:
    if isinstance(value, Message):
        return say(value, names, field_label)
    if is_messages(value):
        return "; ".join(say(item, names, field_label) for item in value)
    return value


def word(message: Message, names: Names | None = None, field_label: FieldLabel | None = None) -> str:
    """The message in the page's language by its own wording; KeyError when it has none, or its
    parameters do not fit it (see :func:`say`, which then shows the English)."""
    names = names or _NoNames()
    # Messages inside (a template's reason in a settings error, a request's fields) are worded first.
    params = {name: _inner(value, names, field_label) for name, value in message.params.items()}
    text = TEXTS[message.code](params, names)
    if message.field:
        return f"{field_label(message.field) if field_label else message.field}: {text}"
    return text


def say(message: Message | str, names: Names | None = None, field_label: FieldLabel | None = None) -> str:
    """The message in the page's language; text (a row written before codes) is shown as written, and a
    message without a wording that fits it in English as the CLI prints it."""
    if isinstance(message, str):
        return message
    try:
        return word(message, names, field_label)
    except (KeyError, TypeError, ValueError):   # a code or parameters of another version
        return message.english()
