"""Does an order make an activated key? Both the plugin list and the add-on's setting decide (core.md 13)."""

from __future__ import annotations

import pytest

from sidecar.devstack.seed import php_serialize
from sidecar.memberlux.payments import PAYMENTS_PLUGIN, payments_state, plugin_names


class Options:
    def __init__(self, **values) -> None:
        self.values = values

    def option(self, name: str):  # the reader's signature
        return self.values.get(name)


ON = php_serialize({"mblp": {"auto_activation": "on"}})
OFF = php_serialize({"mblp": {"auto_activation": "off"}})
ACTIVE = php_serialize(["akismet/akismet.php", PAYMENTS_PLUGIN])
INACTIVE = php_serialize(["akismet/akismet.php"])


@pytest.mark.parametrize("active_plugins, main_options, multisite, makes_keys", [
    (ACTIVE, ON, False, True),
    (ACTIVE, ON, True, True),
    (INACTIVE, ON, False, False),              # deactivated: its setting stays on, no keys
    (INACTIVE, ON, True, None),                # may be network-activated: cannot tell from here
    (ACTIVE, OFF, False, False),               # keys only e-mailed
    (INACTIVE, OFF, True, False),
    (None, ON, False, None),                   # no plugin list at all
    ("a:1:{broken", ON, False, None),          # undecodable plugin list
    (ACTIVE, None, False, None),               # no MemberLux options: cannot tell the setting
    (php_serialize({0: "x.php", 3: PAYMENTS_PLUGIN}), ON, False, True),  # a list with gaps
])
def test_orders_make_keys_only_with_the_add_on_active_and_auto_activation_on(active_plugins, main_options, multisite,
                                                                             makes_keys):
    state = payments_state(Options(active_plugins=active_plugins, wpm_main_options=main_options), multisite=multisite)
    assert state.makes_keys is makes_keys
    assert state.reason


def test_plugin_names_accepts_lists_and_arrays_with_gaps_only():
    assert plugin_names(["a.php", 3]) == {"a.php"}
    assert plugin_names({1: "a.php", 5: "b.php"}) == {"a.php", "b.php"}
    assert plugin_names("a.php") is None
