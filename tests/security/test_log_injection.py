"""Finding 11: ``POST /admin/grants/x%0AFORGED-LINE...`` wrote a forged line into the text log,
unauthenticated (the CSRF warning quotes the path). Every value from outside is now written with its
control characters escaped in the text format; JSON lines are safe by construction."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
from urllib.parse import quote

from sidecar.app import create_app
from sidecar.logs import configure_logging, escape_controls

FORGED = "2026-12-06 10:00:00,000 INFO    sidecar.web.auth [-] admin root signed in from 10.0.0.1"
# LF, CR, CR LF, NEL (C1), U+2028, U+2029, VT, FF, ESC: each of them breaks a line in some viewer.
BREAKS = ["\n", "\r", "\r\n", "\x85", "\u2028", "\u2029", "\x0b", "\x0c", "\x1b[2K\r"]
TIME_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


@pytest.fixture
def logging_restored():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


@pytest.fixture
def client(small_site, emulator, settings_for, make_runtime):
    settings = settings_for(small_site, emulator, web={"trusted_proxies": 1})
    return create_app(make_runtime(settings), testing=True).test_client()


def _attack(client) -> None:
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    for n, brk in enumerate(BREAKS):
        # The path (percent-decoded by the server), unauthenticated, as in the finding.
        assert client.post(f"/admin/grants/x{quote(brk + FORGED)}-{n}/retry").status_code == 403  # refused for its missing CSRF token
        # A login name, and a client address from X-Forwarded-For through a trusted proxy (loopback);
        # HTTP itself keeps CR/LF out of header values, not the other breaks.
        header_brk = brk if all(ord(ch) < 256 and ch not in "\r\n" for ch in brk) else "\x85"
        client.post("/login", data={"login": f"a{brk}{FORGED}", "password": "p", "csrf_token": token},
                    headers={"X-Forwarded-For": f"10.1.1.{n}{header_brk}{FORGED}"})


def test_text_log_gets_no_forged_line(client, logging_restored):
    out = io.StringIO()
    configure_logging("text", "DEBUG", stream=out)
    _attack(client)
    lines = out.getvalue().split("\n")
    assert lines.pop() == ""
    assert any("FORGED" in line or "signed in from 10.0.0.1" in line for line in lines)  # the records are there
    for line in lines:
        # Every line is a record of its own, or an indented traceback line; nothing else.
        assert TIME_STAMP.match(line) or line.startswith("  | "), repr(line)
        assert line.count("signed in from 10.0.0.1") <= 1
        assert not any(ch in line for ch in "\r\x85\u2028\u2029\x0b\x0c\x1b"), repr(line)


def test_json_log_is_one_object_per_line(client, logging_restored):
    out = io.StringIO()
    configure_logging("json", "DEBUG", stream=out)
    _attack(client)
    lines = out.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line parses: no line was split or forged
    assert len(records) == len(out.getvalue().split("\n")) - 1
    # The value is kept whole, line break included, inside its own record.
    assert any(f"x\n{FORGED}-0" in record["message"] for record in records)


def test_escape_controls_unit():
    assert escape_controls("a\nb\rc\td\x00e\x7ff\x85g\u2028h\u2029i") == \
        "a\\nb\\rc\\td\\x00e\\x7ff\\x85g\\u2028h\\u2029i"
    assert escape_controls("Ольга — ok") == "Ольга — ok"
