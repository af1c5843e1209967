"""Closed-loop load from ``wrk`` (Debian package ``wrk``), for the figures where the client must cost
next to nothing: the Python client of bench/bridge.py spends about as much CPU per request as the server
it measures, on the same two cores, so its throughput is a ceiling of client + server, not of the server.

``wrk`` is a C load generator (an event loop per thread); a Lua script made here gives each request a
new body (a new deal) and repeats an earlier one of its thread for a share of them (a CRM resending),
counts answers by status and the ``Idempotent-Replayed`` header, and prints one JSON line at the end.
Latency is wrk's own: from writing the request to reading the whole answer, per connection.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

RESULT_PREFIX = "WRK_JSON "

_SCRIPT = r"""
local products = %(products)s
local run_id = "%(run_id)s"
local api_key = "%(api_key)s"
local duplicate_share = %(duplicate_share)s
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(1000 + tid)
  sent = 0
  made = {}
  ok = 0
  other = 0
  replayed = 0
end

request = function()
  local body
  if #made > 0 and math.random() < duplicate_share then
    body = made[math.random(#made)]
  else
    sent = sent + 1
    local p = products[(sent %% #products) + 1]
    body = string.format('{"user": {"email": "bench.%%s.%%d.%%d@example.org", "first_name": "Bench", ' ..
      '"last_name": "N%%d"}, "grant": {"term_id": %%d, "duration": %%d, "units": "%%s"}, ' ..
      '"external_id": "bench-%%s-%%d-%%d", "source": "bench"}',
      run_id, tid, sent, sent, p[1], p[2], p[3], run_id, tid, sent)
    if #made < 4096 then table.insert(made, body) end
  end
  local headers = {["Content-Type"] = "application/json", ["X-API-Key"] = api_key}
  if %(close)s then headers["Connection"] = "close" end
  return wrk.format("POST", "/api/v1/grants", headers, body)
end

response = function(status, headers, body)
  if status == 200 or status == 202 then ok = ok + 1 else other = other + 1 end
  if headers["Idempotent-Replayed"] == "true" then replayed = replayed + 1 end
end

done = function(summary, latency, requests)
  local total_ok, total_other, total_replayed = 0, 0, 0
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    total_other = total_other + thread:get("other")
    total_replayed = total_replayed + thread:get("replayed")
  end
  report(summary, latency, total_ok, total_other, total_replayed)
end
"""

_HEALTH_SCRIPT = r"""
done = function(summary, latency, requests)
  report(summary, latency, summary.requests - summary.errors.status, summary.errors.status, 0)
end
"""

# Appended to both scripts: the one JSON line the run's figures are read from.
_REPORT = r"""
function report(summary, latency, ok, other, replayed)
  io.write(string.format('%(prefix)s{"requests": %%d, "duration_us": %%d, "ok": %%d, "other_status": %%d, ' ..
    '"replayed": %%d, "errors": {"connect": %%d, "read": %%d, "write": %%d, "timeout": %%d, "status": %%d}, ' ..
    '"latency_us": {"p50": %%d, "p90": %%d, "p99": %%d, "max": %%d, "mean": %%.1f}}\n',
    summary.requests, summary.duration, ok, other, replayed,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout, summary.errors.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def available() -> str | None:
    """The path of ``wrk``, or None when it is not installed (``apt-get install wrk``)."""
    return shutil.which("wrk")


def _lua_products(products: list[tuple[int, int, str]]) -> str:
    return "{" + ", ".join(f'{{{int(t)}, {int(d)}, "{str(u)}"}}' for t, d, u in products) + "}"


def run(url: str, *, seconds: float, connections: int, threads: int = 1, grants: dict | None = None,
        new_connections: bool = False) -> dict:
    """Run wrk against ``url`` for ``seconds``; with ``grants`` (products, run_id, api_key,
    duplicate_share) it posts new grants, else it GETs ``url``. With ``new_connections`` each post asks
    the server to close the connection after its answer (``Connection: close``), so every request comes
    on a new connection, as webhooks of most senders do. Returns wrk's figures as a dict."""
    if grants is not None:
        text = _SCRIPT % {"products": _lua_products(grants["products"]), "run_id": grants["run_id"],
                          "api_key": grants["api_key"], "duplicate_share": grants["duplicate_share"],
                          "close": "true" if new_connections else "false"}
    else:
        text = _HEALTH_SCRIPT
    text += _REPORT % {"prefix": RESULT_PREFIX}
    with tempfile.TemporaryDirectory(prefix="mls-wrk-") as work:
        script = Path(work) / "load.lua"
        script.write_text(text, encoding="utf-8")
        completed = subprocess.run(
            ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", "30s",
             "-s", str(script), url], capture_output=True, text=True, timeout=seconds + 120, check=False)
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            figures = json.loads(line[len(RESULT_PREFIX):])
            figures["rps"] = figures["requests"] / (figures["duration_us"] / 1e6)
            return figures
    raise RuntimeError(f"wrk printed no result (exit {completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
