"""Helpers of the CLI tests: a good configuration file and running the command in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


GOOD = """
[wordpress]
db_url = "sqlite:///{wp}"
[memberlux]
rest_base_url = "https://school.example/wp-json"
rest_user = "svc"
rest_password = "env:TEST_REST_PW"
[store]
url = "sqlite:///{store}"
"""


def run(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    import os

    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLS_")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "sidecar.cli", *args], capture_output=True, text=True,
                          env=environment, cwd=cwd, timeout=120)


def write_config(tmp_path: Path, text: str = GOOD) -> Path:
    path = tmp_path / "mlsidecar.toml"
    path.write_text(text.format(wp=tmp_path / "wp.sqlite", store=tmp_path / "store.sqlite"))
    return path
