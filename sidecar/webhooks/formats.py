"""Body formats of outbound events: the registry the delivery looks formats up in.

"standard" is the Standard Webhooks body; "template" the body an endpoint's template builds from it
(:mod:`sidecar.webhooks.templates`); capabilities register their own (programs: the legacy bundle body
and the admin notice e-mail). This module imports no capability, so a capability can
register here without importing the delivery, and the delivery can ask for every format to be loaded.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.bootstrap import Runtime
from sidecar.mail.mailer import Mail
from sidecar.store.webhook_models import WebhookEndpoint, WebhookEvent
from sidecar.webhooks.events import body
from sidecar.webhooks.templates import render


@dataclass(frozen=True)
class Rendered:
    """What one endpoint receives for one event: JSON for HTTP endpoints, a mail for e-mail ones."""

    payload: bytes = b""
    mail: Mail | None = None


Formatter = Callable[[Runtime, WebhookEndpoint, WebhookEvent], Rendered]
FORMATTERS: dict[str, Formatter] = {}
#: Modules that register formats when imported (the capabilities that own them).
PROVIDERS = ("sidecar.programs.notices",)


def register_format(name: str, formatter: Formatter) -> None:
    FORMATTERS[name] = formatter


def load_providers() -> None:
    for module in PROVIDERS:
        importlib.import_module(module)


def _standard(_runtime: Runtime, _endpoint: WebhookEndpoint, event: WebhookEvent) -> Rendered:
    return Rendered(json.dumps(body(event), ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


register_format("standard", _standard)


def _template(_runtime: Runtime, endpoint: WebhookEndpoint, event: WebhookEvent) -> Rendered:
    return Rendered(render(endpoint.body_template, body(event)))


register_format("template", _template)
