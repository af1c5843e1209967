"""The linters hold: ruff with the project's rule set (pyproject.toml) on all code, mypy strictly on the
pure rules and the WordPress adapters. Run as part of the suite, so that the README's test command and
CI check them too."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str) -> str:
    found = Path(sys.executable).with_name(name)
    if found.exists():
        return str(found)
    which = shutil.which(name)
    if which is None:
        pytest.fail(f"{name} is not installed: `pip install -e '.[dev]'` installs it")
    return which


def test_ruff_finds_nothing():
    result = subprocess.run([tool("ruff"), "check", "--no-cache", "sidecar", "tests", "bench"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_strict_on_the_domain_and_the_memberlux_adapters():
    # Incremental: a warm .mypy_cache re-checks only what changed (a few seconds instead of half a minute);
    # mypy checks a cached module again whenever its source or a dependency's interface changed.
    result = subprocess.run([tool("mypy")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
