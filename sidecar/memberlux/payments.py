"""Does an order through ``/mbl/v1/order`` make an activated key on this site? (core.md 5.4, 13)

Two facts decide it: the MEMBERLUX PAYMENTS plugin is active (``active_plugins``; its setting survives
a deactivation), and its ``wpm_main_options['mblp']['auto_activation']`` is ``on``. A network
activation on multisite lives in the network's ``sitemeta``, which the doctor reads; here a plugin
missing from the site's own list on a multisite network is "cannot tell", never "no".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sidecar.memberlux.wpdata import WpDataError, maybe_unserialize

PAYMENTS_PLUGIN = "mbl-payments/mbl-payments.php"


def plugin_names(value: object) -> set[str] | None:
    """The plugin files of a decoded ``active_plugins`` value: a PHP list, or an array with gaps
    (WordPress unsets the entry of a deactivated plugin without renumbering)."""
    if isinstance(value, list):
        items = value
    elif isinstance(value, dict):
        items = list(value.values())
    else:
        return None
    return {item for item in items if isinstance(item, str)}


class OptionReader(Protocol):
    def option(self, name: str) -> Any: ...


@dataclass(frozen=True)
class PaymentsState:
    #: True: orders make activated keys; False: they cannot; None: it cannot be told from here.
    makes_keys: bool | None
    reason: str


def payments_state(reader: OptionReader, *, multisite: bool) -> PaymentsState:
    try:
        plugins = plugin_names(maybe_unserialize(reader.option("active_plugins")))
    except WpDataError:
        plugins = None
    try:
        options = maybe_unserialize(reader.option("wpm_main_options"))
    except WpDataError:
        options = None
    mblp = options.get("mblp") if isinstance(options, dict) else None
    auto = mblp.get("auto_activation") if isinstance(mblp, dict) else None
    if isinstance(options, dict) and auto != "on":
        return PaymentsState(False, f"MEMBERLUX PAYMENTS auto-activation is {auto!r}, not 'on': orders make keys "
                                    "that are only e-mailed")
    if plugins is not None and PAYMENTS_PLUGIN in plugins:
        return PaymentsState(True if auto == "on" else None, "MEMBERLUX PAYMENTS is active"
                             + ("" if auto == "on" else "; its auto-activation setting cannot be read"))
    if plugins is not None and not multisite:
        return PaymentsState(False, f"MEMBERLUX PAYMENTS is not active ({PAYMENTS_PLUGIN} is not in active_plugins): "
                                    "orders make no key")
    return PaymentsState(None, "whether MEMBERLUX PAYMENTS is active cannot be told from active_plugins")
