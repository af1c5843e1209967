"""The one client for MemberLux's REST API: the only way the sidecar changes anything on the site.

Error classes tell the caller what it may do next:

* ``PermanentRestError`` – the site refused the request (4xx with a WordPress error body, or the
  documented 404 for an unknown product). Retrying the same request cannot help.
* ``UnknownOutcomeError`` – the request was sent but we do not know what happened (timeout, 5xx,
  connection dropped mid-way). The order may have been created: look it up (``utm_id`` in
  ``keys_meta``) before retrying.
* ``UnreachableError`` – the connection could not be opened: nothing reached the site, so a retry
  is safe.

Credentials travel only in the ``Authorization`` header (Application Password over HTTP Basic,
core.md 5.1), never in URLs or log lines.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import requests

log = logging.getLogger(__name__)

ORDER_ROUTE = "/mbl/v1/order"
UTM_SOURCE = "mlsidecar"
UTM_MAX_LENGTH = 60  # keys_meta.utm_* are VARCHAR(60): longer values are truncated by MemberLux


class RestError(Exception):
    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 body: Any = None, elapsed: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.body = body
        self.elapsed = elapsed


class PermanentRestError(RestError):
    """The site answered and refused; the same request will be refused again."""


class UnknownOutcomeError(RestError):
    """Sent, outcome unknown: confirm in the database before any retry."""


class UnreachableError(RestError):
    """Nothing reached the site; retrying is safe."""


@dataclass(frozen=True)
class OrderResult:
    order_id: int | None
    body: dict[str, Any]
    status: int
    elapsed: float


@dataclass(frozen=True)
class Customer:
    email: str
    first_name: str = ""
    last_name: str = ""
    patronymic: str = ""
    phone: str = ""
    extra: dict[str, str] = field(default_factory=dict)  # custom1..custom10, custom1textarea


def _wp_error(body: Any) -> tuple[str | None, str]:
    if isinstance(body, dict):
        if "code" in body:
            return str(body.get("code")), str(body.get("message", ""))
        if "error" in body:
            return None, str(body["error"])
    return None, ""


class MemberLuxRestClient:
    def __init__(self, base_url: str, user: str, password: str | None, *, timeout: float = 90.0,
                 verify_tls: bool = True, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.verify = verify_tls
        self.session.headers["User-Agent"] = "mlsidecar"
        self.session.headers["Accept"] = "application/json"
        self._auth = (user, password) if user and password else None

    # --- transport ------------------------------------------------------------------------------
    def _request(self, method: str, route: str, *, query: dict[str, str] | None = None,
                 json_body: Any = None, timeout: float | None = None) -> tuple[int, Any, float]:
        url = self.base_url + route + (("?" + urlencode(query)) if query else "")
        started = time.monotonic()
        try:
            response = self.session.request(method, url, json=json_body, auth=self._auth,
                                            timeout=(min(10.0, timeout or self.timeout), timeout or self.timeout),
                                            allow_redirects=False)
        except requests.ConnectTimeout as exc:
            raise UnreachableError(f"connect timeout to {self.base_url}", elapsed=time.monotonic() - started) from exc
        except requests.ConnectionError as exc:
            # A refused or unresolvable connection sent nothing; a reset after connecting might have.
            text = str(exc)
            sent = "RemoteDisconnected" in text or "Connection aborted" in text
            cls = UnknownOutcomeError if sent else UnreachableError
            raise cls(f"connection to {self.base_url} failed: {type(exc).__name__}", elapsed=time.monotonic() - started) from exc
        except requests.Timeout as exc:
            raise UnknownOutcomeError(f"no answer within {timeout or self.timeout:.0f} s",
                                      elapsed=time.monotonic() - started) from exc
        elapsed = time.monotonic() - started
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text[:2000]
        return response.status_code, body, elapsed

    def _raise_for(self, status: int, body: Any, elapsed: float, what: str) -> None:
        code, message = _wp_error(body)
        detail = f"{what}: HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        if 300 <= status < 400:
            raise PermanentRestError(detail + " (redirect: check rest_base_url, http vs https)", status=status,
                                     code=code, body=body, elapsed=elapsed)
        if status == 429 or status >= 500:
            raise UnknownOutcomeError(detail, status=status, code=code, body=body, elapsed=elapsed)
        raise PermanentRestError(detail, status=status, code=code, body=body, elapsed=elapsed)

    # --- harmless reads (doctor) ------------------------------------------------------------
    def index(self) -> dict[str, Any]:
        """``GET /wp-json/``: the namespaces the site serves (``mbl/v1`` when the module is on)."""
        status, body, elapsed = self._request("GET", "/", timeout=min(self.timeout, 15))
        if status != 200 or not isinstance(body, dict):
            self._raise_for(status, body, elapsed, "REST index")
        return body

    def current_user(self) -> dict[str, Any]:
        """``GET /wp/v2/users/me?context=edit``: the account behind the credentials and its capabilities."""
        status, body, elapsed = self._request("GET", "/wp/v2/users/me", query={"context": "edit"},
                                              timeout=min(self.timeout, 15))
        if status != 200 or not isinstance(body, dict):
            self._raise_for(status, body, elapsed, "current user")
        return body

    # --- the write path ---------------------------------------------------------------------
    @staticmethod
    def correlation_query(grant_ref: str) -> dict[str, str]:
        """UTM parameters MemberLux copies into keys_meta for each key the request activates (core.md 5.6)."""
        if len(grant_ref) > UTM_MAX_LENGTH:
            raise ValueError(f"grant reference longer than {UTM_MAX_LENGTH} characters would be truncated by MemberLux")
        return {"utm_source": UTM_SOURCE, "utm_id": grant_ref}

    def order_product(self, customer: Customer, product_id: int, grant_ref: str) -> OrderResult:
        """Real dialect: one ``mbl_key`` product per call (same-level lines in one call do not stack)."""
        body: dict[str, Any] = {"email": customer.email, "product_id": int(product_id)}
        body.update(self._customer_fields(customer))
        return self._order(body, grant_ref)

    def order_term(self, customer: Customer, term_id: int, duration: int, units: str, grant_ref: str,
                   meta: dict[str, Any] | None = None) -> OrderResult:
        """Owner's term-id dialect: ``customer`` / ``product{term_id,duration,units}`` / ``meta``."""
        body = {
            "customer": {"email": customer.email, **self._customer_fields(customer)},
            "product": {"term_id": int(term_id), "duration": int(duration), "units": units},
            "meta": dict(meta or {}),
        }
        return self._order(body, grant_ref)

    @staticmethod
    def _customer_fields(customer: Customer) -> dict[str, str]:
        fields = {"first_name": customer.first_name, "last_name": customer.last_name,
                  "patronymic": customer.patronymic, "phone": customer.phone, **customer.extra}
        return {k: v for k, v in fields.items() if v}

    def _order(self, body: dict[str, Any], grant_ref: str) -> OrderResult:
        status, answer, elapsed = self._request("POST", ORDER_ROUTE, query=self.correlation_query(grant_ref),
                                                json_body=body)
        if status != 200:
            self._raise_for(status, answer, elapsed, "order")
        if not isinstance(answer, dict):
            raise UnknownOutcomeError("order: HTTP 200 without a JSON object", status=status, body=answer,
                                      elapsed=elapsed)
        order_id = answer.get("order")
        log.info("order accepted by the site in %.2f s (order %s)", elapsed, order_id)
        return OrderResult(order_id=int(order_id) if isinstance(order_id, int) else None, body=answer,
                           status=status, elapsed=elapsed)
