"""The one client for MemberLux's REST API: the only way the sidecar changes anything on the site.

Error classes tell the caller what it may do next:

* ``PermanentRestError`` – the site refused the request (4xx with a WordPress error body, or the
  documented 404 for an unknown product). Retrying the same request cannot help.
* ``UnknownOutcomeError`` – the request reached (or may have reached) the site and we do not know
  what it did: no answer before the deadline, a 5xx or 504 from a proxy, the connection dropped
  after the request was sent. PHP keeps running after the caller gave up (core.md 13), so the
  order may still be written minutes later: never send it again before the site can no longer be
  running the first one, and look for its traces first (``sidecar.bridge.traces``).
* ``UnreachableError`` – no byte of the request left this process (refused or unresolvable
  connection, connect timeout, TLS handshake or certificate failure): a retry is safe.

Whether the request was sent is decided by the transport itself (the connection records the
moment it first writes to the socket), not by the text of an exception.

Two properties make concurrency real on a MemberLux site (core.md 13): no cookie is ever kept or
sent (MemberLux starts a PHP session on every request, and PHP serialises the requests of one
session, so a cookie jar would turn parallel orders into a queue whose waiting eats each call's
timeout), and every call has one **total deadline** covering connect, send, the wait for the
answer and reading it, not only a per-read timeout.

Credentials travel only in the ``Authorization`` header (Application Password over HTTP Basic,
core.md 5.1), never in URLs or log lines.
"""

from __future__ import annotations

import http.cookiejar
import json
import logging
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

log = logging.getLogger(__name__)

ORDER_ROUTE = "/mbl/v1/order"
UTM_SOURCE = "mlsidecar"
UTM_MAX_LENGTH = 60  # keys_meta.utm_* are VARCHAR(60): longer values are truncated by MemberLux
CONNECT_TIMEOUT_CAP = 10.0
MAX_ANSWER_BYTES = 1_048_576  # an order answer is a few bytes; an HTML error page a few kB


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


@dataclass(frozen=True)
class OrderLabels:
    """Where a grant came from, written beside ``utm_id`` for MemberLux's own reports: ``utm_medium`` = the
    intake channel (api, legacy, amocrm, program), ``utm_campaign`` = the sender's own ``source`` text."""

    channel: str = ""
    source: str = ""


def _wp_error(body: Any) -> tuple[str | None, str]:
    if isinstance(body, dict):
        if "code" in body:
            return str(body.get("code")), str(body.get("message", ""))
        if "error" in body:
            return None, str(body["error"])
    return None, ""


# --- transport: no cookies, a record of what was sent, a total deadline ---------------------------

class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Accept no cookie and send none: a PHPSESSID would serialise our parallel orders."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


_call = threading.local()  # per call (each call runs in a thread of its own): did a byte leave?


class _SendRecordingMixin:
    def send(self, data: Any) -> None:
        # http.client connects lazily inside send(); a failure there sent nothing.
        if getattr(self, "sock", None) is None:
            self.connect()  # type: ignore[attr-defined]
        _call.sent = True
        super().send(data)  # type: ignore[misc]


class _RecordingHTTPConnection(_SendRecordingMixin, HTTPConnection):
    pass


class _RecordingHTTPSConnection(_SendRecordingMixin, HTTPSConnection):
    pass


class _RecordingHTTPPool(HTTPConnectionPool):
    ConnectionCls = _RecordingHTTPConnection


class _RecordingHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _RecordingHTTPSConnection


class _RecordingAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _RecordingHTTPPool, "https": _RecordingHTTPSPool}


def _is_certificate_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        stack.extend([current.__cause__, current.__context__, getattr(current, "reason", None),
                      *[a for a in current.args if isinstance(a, BaseException)]])
    return False


@dataclass
class _Exchange:
    """What one HTTP exchange produced, filled in by the thread that performs it."""

    status: int | None = None
    body: Any = None
    error: BaseException | None = None
    sent: bool = False
    done: threading.Event = field(default_factory=threading.Event)


def _read_answer(response: requests.Response, deadline: float) -> Any:
    chunks: list[bytes] = []
    size = 0
    # A response built in memory (a transport adapter's fake) has its body already and nothing to stream.
    pieces = [response.content] if response.raw is None else response.iter_content(16384)
    for chunk in pieces:
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            break
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise TimeoutError("the answer did not arrive before the deadline")
    text = b"".join(chunks).decode(response.encoding or "utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text[:2000]


class MemberLuxRestClient:
    def __init__(self, base_url: str, user: str, password: str | None, *, timeout: float = 90.0,
                 verify_tls: bool = True, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.verify = verify_tls
        self.session.headers["User-Agent"] = "mlsidecar"
        self.session.headers["Accept"] = "application/json"
        self.session.cookies.set_policy(_NoCookies())
        if session is None:
            # A session handed in keeps its own transport (a test's fake site); ours records what was sent.
            adapter = _RecordingAdapter(max_retries=0)
            self.session.mount("http://", adapter)
            self.session.mount("https://", adapter)
        self._auth = (user, password) if user and password else None

    def _exchange(self, method: str, url: str, json_body: Any, deadline: float, exchange: _Exchange) -> None:
        _call.sent = False
        try:
            remaining = max(0.001, deadline - time.monotonic())
            # A write never rides on a kept-alive connection: one the server closed meanwhile would fail
            # after the request was written and turn a harmless retry into an unknown outcome.
            headers = {"Connection": "close"} if method != "GET" else None
            response = self.session.request(method, url, json=json_body, auth=self._auth, stream=True, headers=headers,
                                            timeout=(min(CONNECT_TIMEOUT_CAP, remaining), remaining),
                                            allow_redirects=False)
            try:
                exchange.status = response.status_code
                exchange.body = _read_answer(response, deadline)
            finally:
                response.close()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread as it is
            exchange.error = exc
        finally:
            exchange.sent = bool(getattr(_call, "sent", False))
            exchange.done.set()

    def _request(self, method: str, route: str, *, query: dict[str, str] | None = None,
                 json_body: Any = None, timeout: float | None = None) -> tuple[int, Any, float]:
        """One exchange within ``timeout`` seconds in total, whatever the server does meanwhile.

        The exchange runs in a thread of its own, so the caller gets an answer (or an error) at the
        deadline even from a server that trickles its answer byte by byte; the abandoned exchange
        ends on its own at its socket timeout.
        """
        url = self.base_url + route + (("?" + urlencode(query)) if query else "")
        total = timeout or self.timeout
        started = time.monotonic()
        deadline = started + total
        exchange = _Exchange()
        worker = threading.Thread(target=self._exchange, args=(method, url, json_body, deadline, exchange),
                                  name="memberlux-rest", daemon=True)
        worker.start()
        finished = exchange.done.wait(total + 0.05)
        elapsed = time.monotonic() - started
        if not finished:
            raise UnknownOutcomeError(f"no complete answer within {total:.0f} s", elapsed=elapsed)
        exc = exchange.error
        if exc is None:
            assert exchange.status is not None
            return exchange.status, exchange.body, elapsed
        if not exchange.sent or _is_certificate_failure(exc):
            # Nothing left this process (refused, unresolvable, connect timeout, TLS handshake).
            raise UnreachableError(f"cannot connect to {self.base_url}: {type(exc).__name__}",
                                   elapsed=elapsed) from exc
        if isinstance(exc, (requests.Timeout, TimeoutError)):
            raise UnknownOutcomeError(f"no complete answer within {total:.0f} s", elapsed=elapsed) from exc
        if isinstance(exc, (requests.RequestException, OSError)):
            raise UnknownOutcomeError(f"connection to {self.base_url} broke after the request was sent: "
                                      f"{type(exc).__name__}", elapsed=elapsed) from exc
        raise exc

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
        return dict(body)

    def current_user(self) -> dict[str, Any]:
        """``GET /wp/v2/users/me?context=edit``: the account behind the credentials and its capabilities."""
        status, body, elapsed = self._request("GET", "/wp/v2/users/me", query={"context": "edit"},
                                              timeout=min(self.timeout, 15))
        if status != 200 or not isinstance(body, dict):
            self._raise_for(status, body, elapsed, "current user")
        return dict(body)

    # --- the write path ---------------------------------------------------------------------
    @staticmethod
    def correlation_query(grant_ref: str, labels: OrderLabels | None = None) -> dict[str, str]:
        """UTM parameters MemberLux copies into keys_meta for each key the request activates (core.md 5.6):
        ``utm_id`` finds the key again; ``utm_medium`` / ``utm_campaign`` say where the grant came from in
        MemberLux's own reports (cut to the column's 60 characters, which MemberLux would do anyway)."""
        if len(grant_ref) > UTM_MAX_LENGTH:
            raise ValueError(f"grant reference longer than {UTM_MAX_LENGTH} characters would be truncated by MemberLux")
        query = {"utm_source": UTM_SOURCE, "utm_id": grant_ref}
        if labels is not None:
            for name, value in (("utm_medium", labels.channel), ("utm_campaign", labels.source)):
                value = " ".join(value.split())[:UTM_MAX_LENGTH]
                if value:
                    query[name] = value
        return query

    def order_product(self, customer: Customer, product_id: int, grant_ref: str,
                      labels: OrderLabels | None = None) -> OrderResult:
        """Real dialect: one ``mbl_key`` product per call (same-level lines in one call do not stack)."""
        body: dict[str, Any] = {"email": customer.email, "product_id": int(product_id)}
        body.update(self._customer_fields(customer))
        return self._order(body, grant_ref, labels)

    def order_term(self, customer: Customer, term_id: int, duration: int, units: str, grant_ref: str,
                   meta: dict[str, Any] | None = None, labels: OrderLabels | None = None) -> OrderResult:
        """Owner's term-id dialect: ``customer`` / ``product{term_id,duration,units}`` / ``meta``."""
        body = {
            "customer": {"email": customer.email, **self._customer_fields(customer)},
            "product": {"term_id": int(term_id), "duration": int(duration), "units": units},
            "meta": dict(meta or {}),
        }
        return self._order(body, grant_ref, labels)

    @staticmethod
    def _customer_fields(customer: Customer) -> dict[str, str]:
        fields = {"first_name": customer.first_name, "last_name": customer.last_name,
                  "patronymic": customer.patronymic, "phone": customer.phone, **customer.extra}
        return {k: v for k, v in fields.items() if v}

    def _order(self, body: dict[str, Any], grant_ref: str, labels: OrderLabels | None) -> OrderResult:
        status, answer, elapsed = self._request("POST", ORDER_ROUTE, query=self.correlation_query(grant_ref, labels),
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
