"""Finding 12: weak secrets were accepted. ``web.secret_key = "a"``, API keys ``"a"`` and a hook token
``"abc"`` passed ``mlsidecar config check`` (exit 0) and ``mlsidecar doctor`` said the secrets were fine.

Every secret the sidecar itself compares or signs with now needs 32 characters (and some variety);
configuration loading refuses a weaker one, naming the key, the minimum and how to make a good one.
Credentials chosen by others (the Application Password, SMTP and database passwords, the amoCRM token)
are not judged.
"""

from __future__ import annotations

import base64

import pytest

from sidecar.config import ConfigError, settings_from_mapping
from tests.cli.support import GOOD, run, write_config
from tests.strong_secrets import strong_secret

MINIMAL = {"wordpress": {"db_url": "sqlite:///site.sqlite"}, "memberlux": {"rest_base_url": "https://s.example/wp-json"}}
GENERATE = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
STRONG = strong_secret("weak-secrets")

WEAK = [
    ("web.secret_key", {"web": {"secret_key": "a"}}, "a"),
    ("bridge.api_keys", {"bridge": {"api_keys": {"crm": "a"}}}, "a"),
    ("bridge.api_keys", {"bridge": {"api_keys": {"crm": {"key": STRONG, "previous_key": "old-short"}}}}, "old-short"),
    ("web.api_tokens", {"web": {"api_tokens": {"reports": "abc"}}}, "abc"),
    ("webhooks.memberlux_path_token", {"webhooks": {"memberlux_path_token": "abc"}}, "abc"),
    ("bridge.amocrm.path_token", {"bridge": {"amocrm": {"path_token": "abc"}}}, "abc"),
    ("bridge.hmac_secret", {"bridge": {"hmac_secret": "abc"}}, "abc"),
    ("web.secret_key", {"web": {"secret_key": "a" * 64}}, "a" * 64),         # long but all one character
]


@pytest.mark.parametrize("key, section, value", WEAK, ids=[f"{k}={v[:8]}" for k, _, v in WEAK])
def test_a_weak_secret_is_refused_naming_the_key_the_minimum_and_how_to_make_one(key, section, value):
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({**MINIMAL, **section}, environ={})
    [line] = caught.value.problems
    assert line.startswith(f"{key} = <secret>:"), line
    assert ("at least 32" in line or "different characters" in line) and GENERATE in line
    assert f"'{value}'" not in line and f'"{value}"' not in line


@pytest.mark.parametrize("where", ["bridge.standard_webhook_secrets", "webhooks.endpoints"])
def test_a_signing_secret_needs_sixteen_random_bytes(where):
    short = "whsec_" + base64.b64encode(b"abc").decode()
    data = ({"bridge": {"standard_webhook_secrets": {"crm": short}}} if where.startswith("bridge")
            else {"webhooks": {"endpoints": [{"name": "crm", "url": "https://crm.example/hook", "secret": short}]}})
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({**MINIMAL, **data}, environ={})
    [line] = caught.value.problems
    assert line.startswith(where) and "at least 16 bytes" in line and "whsec_" in line


def test_secrets_chosen_by_others_are_not_judged():
    settings = settings_from_mapping({
        **MINIMAL,
        "memberlux": {"rest_base_url": "https://s.example/wp-json", "rest_user": "svc", "rest_password": "x"},
        "wordpress": {"db_url": "sqlite:///site.sqlite", "db_password": "x"},
        "smtp": {"password": "x"},
        "bridge": {"amocrm": {"token": "x"}},
        "web": {"secret_key": STRONG, "api_tokens": {"reports": STRONG}},
    }, environ={})
    assert settings.memberlux.rest_password.reveal() == "x"


def test_config_check_and_doctor_refuse_the_weak_secrets_of_the_attack(tmp_path):
    text = GOOD + '[web]\nsecret_key = "a"\n[bridge.api_keys]\ncrm = "a"\n[webhooks]\nmemberlux_path_token = "abc"\n'
    config = str(write_config(tmp_path, text))
    for command in (["config", "check"], ["doctor"]):
        result = run("--config", config, *command, env={"TEST_REST_PW": "x"})
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        for key in ("web.secret_key", "bridge.api_keys", "webhooks.memberlux_path_token"):
            assert key in result.stderr
        assert GENERATE in result.stderr and "Secrets" not in result.stdout
