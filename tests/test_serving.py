"""How `mlsidecar serve` configures gunicorn."""

from __future__ import annotations

import os

import pytest

from sidecar import serving
from sidecar.config import settings_from_mapping


@pytest.fixture
def gunicorn_options(monkeypatch):
    captured: dict = {}

    def run(self) -> None:  # instead of starting the arbiter
        captured.update({name: self.cfg.settings[name].get() for name in
                         ("worker_class", "threads", "workers", "worker_tmp_dir")})

    monkeypatch.setattr(serving.SidecarGunicorn, "run", run)
    settings = settings_from_mapping({"wordpress": {"db_url": "sqlite:////tmp/none.sqlite"},
                                      "memberlux": {"rest_base_url": "http://127.0.0.1:9/wp-json", "rest_user": "x",
                                                    "rest_password": "y"},
                                      "web": {"secret_key": "test-secret-key-not-for-production"}}, environ={})
    serving.run_gunicorn(settings, "127.0.0.1", 8000, 2)
    return captured


def test_workers_are_threaded(gunicorn_options):
    assert gunicorn_options["worker_class"] == "gthread"
    assert gunicorn_options["threads"] == 4
    assert gunicorn_options["workers"] == 2


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no memory-backed /dev/shm on this system")
def test_worker_heartbeat_files_are_in_memory(gunicorn_options):
    assert gunicorn_options["worker_tmp_dir"] == "/dev/shm"
