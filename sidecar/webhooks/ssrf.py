"""Refusing webhook destinations inside our own network (SSRF).

A destination is checked when an endpoint is saved and again right before every attempt: its host
name is resolved and **every** address must be public. Loopback, private (RFC 1918, IPv6 ULA),
link-local (incl. cloud metadata 169.254.169.254 and fe80::/10), carrier-grade NAT, multicast,
reserved and unspecified addresses are refused, as are IPv4 addresses hidden in IPv6 (mapped,
6to4, NAT64 well-known prefix). Exceptions are listed in ``webhooks.allow_private_destinations``
(host names or CIDRs). Deliveries never follow redirects, so a public URL cannot bounce inward.

**DNS rebinding.** The name is resolved once, per attempt; the connection then goes to exactly one of
the addresses that were checked (:func:`pinned_session`), never to a second answer the resolver might
give when the HTTP client connects. The Host header and, for https, the TLS SNI and the certificate
check still use the host name of the URL. Proxies from the environment are not used for deliveries
(a proxy would resolve the name again); a CA bundle from ``REQUESTS_CA_BUNDLE`` still is.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from sidecar.domain.messages import Message

Resolver = Callable[[str, int], list[str]]

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class DestinationRefused(ValueError):
    """A destination refused; ``said`` is the reason as a message (its English is the exception's text)."""

    def __init__(self, said: Message) -> None:
        super().__init__(said.english())
        self.said = said


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DestinationRefused(Message("webhooks.url_unresolved_why",
                                         {"host": host, "detail": str(exc.strerror or exc)})) from None
    return sorted({info[4][0] for info in infos})


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None and is_internal(inner):
            return True
    return bool(address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
                or address.is_reserved or address.is_unspecified
                or (isinstance(address, ipaddress.IPv4Address) and address in _CGNAT))


def _allowed(host: str, address: ipaddress._BaseAddress, allow: Sequence[str]) -> bool:
    for entry in allow:
        entry = entry.strip()
        if not entry:
            continue
        if entry.lower() == host.lower():
            return True
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def check_destination(url: str, allow: Sequence[str] = (), resolver: Resolver = system_resolver) -> list[str]:
    """The addresses ``url`` resolves to; :class:`DestinationRefused` when any of them is internal."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationRefused(Message("webhooks.url_not_http", {"url": repr(url)}))
    if parts.username or parts.password:
        raise DestinationRefused(Message("webhooks.url_credentials"))
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = [host] if ipaddress.ip_address(host) else []
    except ValueError:
        addresses = resolver(host, port)
    if not addresses:
        raise DestinationRefused(Message("webhooks.url_unresolved", {"host": host}))
    for text in addresses:
        address = ipaddress.ip_address(text.split("%")[0])
        if is_internal(address) and not _allowed(host, address, allow):
            raise DestinationRefused(Message("webhooks.url_internal", {"host": host, "address": str(address)}))
    return addresses


class PinnedAdapter(HTTPAdapter):
    """Connects to one fixed address whatever the URL's host name resolves to by the time we connect.

    The URL keeps its host name: the Host header is the name, and for https the SNI and the
    certificate check are done against the name (``server_hostname``), so pinning the address
    weakens nothing in TLS. A request for any other host (there should be none: redirects are not
    followed) is refused rather than sent to the pinned address.
    """

    def __init__(self, host: str, address: str) -> None:
        super().__init__(max_retries=0)
        self.host = host.lower().rstrip(".")
        self.address = address.split("%")[0]

    def build_connection_pool_key_attributes(self, request: requests.PreparedRequest, verify: Any,
                                             cert: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if (host_params.get("host") or "").lower().rstrip(".") != self.host:
            raise DestinationRefused(Message("webhooks.url_other_host",
                                             {"host": str(host_params.get("host")), "checked": self.host}))
        host_params["host"] = self.address
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = self.host
        return host_params, pool_kwargs

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        # urllib3 would name the pinned address in the Host header; the receiver expects the name.
        request.headers["Host"] = urlsplit(request.url or "").netloc.rpartition("@")[2]
        # Never through a proxy from the environment: the proxy would resolve the name again.
        return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=None)


def pinned_session(url: str, allow: Sequence[str] = (), resolver: Resolver = system_resolver) -> requests.Session:
    """A session that sends requests for ``url``'s host to an address :func:`check_destination` accepted."""
    addresses = check_destination(url, allow, resolver)
    host = urlsplit(url).hostname or ""
    session = requests.Session()
    adapter = PinnedAdapter(host, addresses[0])
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
