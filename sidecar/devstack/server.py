"""Serve a WSGI app on a real socket in a background thread (tests and ``mlsidecar demo``)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from werkzeug.serving import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code="-", size="-") -> None:  # access lines would drown test output
        pass


def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0, *,
                    quiet: bool = True) -> tuple[str, Callable[[], None]]:
    """Start ``app`` on ``host:port`` (0 = any free port); returns ``(base_url, stop)``.

    Threaded, so a request handler may call back into the same process (webhook receivers, the
    emulator posting to a sidecar served the same way). ``stop`` is idempotent and waits for the thread.
    ``quiet`` drops the per-request access log lines; errors are still logged.
    """
    server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler if quiet else None)
    # Join in-flight request threads on close: a daemon thread killed mid-request at interpreter exit
    # can abort the whole process.
    server.daemon_threads = False
    server.block_on_close = True
    # The loop checks for shutdown between polls: a short poll makes stop() quick (tests start and
    # stop servers by the hundred; werkzeug's default half second per stop adds up).
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"wsgi-{server.server_port}", daemon=True)
    thread.start()
    stopped = threading.Event()

    def stop() -> None:
        if stopped.is_set():
            return
        stopped.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

    return f"http://{host}:{server.server_port}", stop
