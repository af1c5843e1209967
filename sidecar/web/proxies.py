"""X-Forwarded-* headers, honoured only when the connection comes from a configured proxy.

werkzeug's ProxyFix trusts the last ``trusted_proxies`` entries of the headers of *every* request, so
a client that reaches the app directly (a port left open, a container network) could choose its own
address: a fresh throttle bucket per request, another line in the audit trail, a pass through
``bridge.amocrm.ip_allowlist``. Here ProxyFix runs only for requests whose immediate peer is in
``web.trusted_proxy_networks``; every other request keeps its real peer address and scheme.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values)


def peer_is_trusted(remote_addr: str | None, networks: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address((remote_addr or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # "::ffff:127.0.0.1" from a dual-stack socket
    return any(address in network for network in networks)


class TrustedProxyFix:
    """ProxyFix for requests from ``networks``; the plain app for everybody else."""

    def __init__(self, app: Any, hops: int, networks: Iterable[str]) -> None:
        self.app = app
        self.hops = hops
        self.networks = parse_networks(networks)
        self.fixed = ProxyFix(app, x_for=hops, x_proto=hops, x_host=hops, x_prefix=hops)

    def _client_address_is_valid(self, environ: dict[str, Any]) -> bool:
        """The entry ProxyFix would take from X-Forwarded-For is an IP address (or there is none).

        A proxy appends the address it saw, so anything else there was written by a client, e.g. a
        line break and a forged log line when ``trusted_proxies`` counts more proxies than there are.
        """
        entries = [part.strip() for part in environ.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        if not environ.get("HTTP_X_FORWARDED_FOR") or len(entries) < self.hops:
            return True  # ProxyFix leaves REMOTE_ADDR alone
        try:
            ipaddress.ip_address(entries[-self.hops])
        except ValueError:
            return False
        return True

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if peer_is_trusted(environ.get("REMOTE_ADDR"), self.networks) and self._client_address_is_valid(environ):
            return self.fixed(environ, start_response)
        return self.app(environ, start_response)
