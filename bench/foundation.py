"""Foundation figures: reflection time of a stock site on MariaDB, and how long the demo takes to start.

    .venv/bin/python bench/foundation.py [--mariadb mysql+pymysql://root@127.0.0.1:3306/] [--runs 20]

Creates a throwaway MariaDB database (dropped at the end), builds the full site schema in it and
reflects it ``--runs`` times with fresh engines; then starts ``mlsidecar demo`` on free ports twice
(a cold start that builds the demo site, a warm start that reuses it) and reads the time it prints.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar.devstack.wpschema import create_site_schema
from sidecar.memberlux.schema import connect_wordpress, reflect_site


def reflection(admin_url: str, runs: int) -> list[float]:
    name = f"mls_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
    url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        create_site_schema(sa.create_engine(url), "wp_")
        timings = []
        for _ in range(runs):
            engine = connect_wordpress(url)
            started = time.perf_counter()
            reflect_site(engine, "wp_")
            timings.append(time.perf_counter() - started)
            engine.dispose()
        return timings
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")


def demo_start(data_dir: Path) -> tuple[float, float]:
    command = [str(ROOT / ".venv/bin/mlsidecar"), "demo", "--port", "0", "--emulator-port", "0",
               "--data-dir", str(data_dir), "--exit-after", "0.5"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - started
    match = re.search(r"ready in ([0-9.]+) s", result.stdout)
    if result.returncode != 0 or not match:
        raise SystemExit(f"demo failed:\n{result.stdout}\n{result.stderr}")
    return float(match.group(1)), wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mariadb", default="mysql+pymysql://root@127.0.0.1:3306/")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    timings = reflection(args.mariadb, args.runs)
    print(f"reflection on MariaDB ({args.runs} runs, fresh engine each): "
          f"median {statistics.median(timings) * 1000:.1f} ms, max {max(timings) * 1000:.1f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        cold, cold_wall = demo_start(Path(tmp) / "demo")
        warm, warm_wall = demo_start(Path(tmp) / "demo")
    print(f"demo start, cold (builds the site): ready after {cold:.1f} s ({cold_wall:.1f} s wall incl. interpreter)")
    print(f"demo start, warm (reuses .demo):     ready after {warm:.1f} s ({warm_wall:.1f} s wall incl. interpreter)")


if __name__ == "__main__":
    main()
