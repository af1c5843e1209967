"""Liveness and readiness probes, request ids and security headers."""

from __future__ import annotations

from sidecar.app import create_app


def test_healthz_touches_no_database(runtime):
    runtime.wp_engine.dispose()
    client = create_app(runtime, testing=True).test_client()
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}


def test_readyz_ok_when_both_databases_answer(runtime):
    response = create_app(runtime, testing=True).test_client().get("/readyz")
    assert response.status_code == 200 and response.json["status"] == "ready"


def test_readyz_503_names_the_failing_database(runtime, tmp_path):
    import sqlalchemy as sa

    runtime.store_engine = sa.create_engine(f"sqlite:///{tmp_path}/missing-dir/none.sqlite")
    response = create_app(runtime, testing=True).test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["problems"] == {"store": "OperationalError"}
    assert "missing-dir" not in response.get_data(as_text=True), "an anonymous probe learns no path or host"


def test_request_id_is_echoed_or_generated(runtime):
    client = create_app(runtime, testing=True).test_client()
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123-def"}).headers["X-Request-ID"] == "abc-123-def"
    generated = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"}).headers["X-Request-ID"]
    assert len(generated) == 32 and " " not in generated


def test_security_headers(runtime):
    response = create_app(runtime, testing=True).test_client().get("/healthz")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
