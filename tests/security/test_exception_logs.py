"""Finding 4: an unhandled exception logged the MemberLux hook's path token (Flask's "Exception on
<path>" line) and, in text tracebacks, e-mail addresses from the SQL parameters quoted in the
exception message. Now every record is scrubbed (message and traceback) on every handler, in the
text and JSON formats, and the 500 answer echoes nothing."""

from __future__ import annotations

import io
import logging

import pytest
import requests
import sqlalchemy as sa
from flask.logging import default_handler

from sidecar.app import create_app
from sidecar.devstack.server import serve_in_thread
from sidecar.logs import configure_logging
from sidecar.webhooks import hooks

HOOK_TOKEN = "SECRET-memberlux-hook-token-4471"
EMAIL = "leak.person@example.com"
SQL_SECRET = "param-value-q7Zk"  # a non-e-mail SQL parameter: only the parameter masking hides it


@pytest.fixture
def logging_restored():
    """configure_logging replaces the root handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("werkzeug").level)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    logging.getLogger("werkzeug").setLevel(saved[2])


@pytest.fixture
def failing_app(small_site, emulator, settings_for, make_runtime, monkeypatch):
    settings = settings_for(small_site, emulator, webhooks={"memberlux_path_token": HOOK_TOKEN})
    runtime = make_runtime(settings)

    def store_fails(_runtime, _payload):
        # What a driver error looks like: the statement, its parameters and the server's message.
        raise sa.exc.IntegrityError(
            "INSERT INTO mls_inbound_hints (email, note, path) VALUES (%(email)s, %(note)s, %(path)s)",
            {"email": EMAIL, "note": SQL_SECRET, "path": f"/hooks/memberlux/{HOOK_TOKEN}"},
            Exception(f"(1062, \"Duplicate entry '{EMAIL}' for key 'uq_email'\")"))

    monkeypatch.setattr(hooks, "store", store_fails)
    return create_app(runtime, testing=False)


def _leaks(text: str) -> list[str]:
    return [value for value in (HOOK_TOKEN, EMAIL, SQL_SECRET) if value in text]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_unhandled_exception_logs_no_token_and_no_email(failing_app, logging_restored, fmt):
    out = io.StringIO()
    configure_logging(fmt, "DEBUG", stream=out)
    logging.getLogger("werkzeug").setLevel(logging.INFO)  # its request lines carry the path too
    # A handler the sidecar did not install (Flask adds this one when logging is not configured).
    flask_stream = io.StringIO()
    failing_app.logger.addHandler(default_handler)
    try:
        response = failing_app.test_client().post(f"/hooks/memberlux/{HOOK_TOKEN}", json={"type": "purchase"},
                                                  errors_stream=flask_stream)
        base_url, stop = serve_in_thread(failing_app, quiet=False)
        try:
            served = requests.post(f"{base_url}/hooks/memberlux/{HOOK_TOKEN}", json={"type": "purchase"}, timeout=10)
        finally:
            stop()
    finally:
        failing_app.logger.removeHandler(default_handler)

    for answer in (response.get_data(as_text=True), served.text):
        assert _leaks(answer) == []
    assert response.status_code == served.status_code == 500
    logged = out.getvalue()
    # The records are there (the test would pass vacuously otherwise), only scrubbed.
    assert "Exception on /hooks/memberlux/*** [POST]" in logged
    assert "IntegrityError" in logged and "l***@example.com" in logged
    assert "POST /hooks/memberlux/*** HTTP/1.1" in logged  # werkzeug's request line
    assert _leaks(logged) == []
    assert "Exception on /hooks/memberlux/***" in flask_stream.getvalue()
    assert _leaks(flask_stream.getvalue()) == []
