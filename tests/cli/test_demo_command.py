"""`mlsidecar demo` starts the emulated site and the sidecar with no setup, and they work together."""

from __future__ import annotations

import re
import subprocess
import sys
import threading

import requests


def test_demo_starts_serves_and_stops(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecar.cli", "demo", "--port", "0", "--emulator-port", "0", "--users", "40",
         "--levels", "3", "--data-dir", str(tmp_path / "demo"), "--exit-after", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "Ctrl-C" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(120), "demo did not start:\n" + "".join(lines) + process.stderr.read()
        text = "".join(lines)
        sidecar = re.search(r"sidecar:\s+(http://\S+?)/\s", text).group(1)
        site = re.search(r"emulated site:\s+(http://\S+?)/wp-json/", text).group(1)
        assert "login 'admin'" in text and re.search(r"ready in [0-9.]+ s", text)
        assert requests.get(sidecar + "/healthz", timeout=10).json() == {"status": "ok"}
        assert requests.get(sidecar + "/readyz", timeout=10).json()["status"] == "ready"
        assert "mbl/v1" in requests.get(site + "/wp-json/", timeout=10).json()["namespaces"]
    finally:
        process.terminate()
        process.wait(timeout=30)
