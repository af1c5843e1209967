"""Production web serving: gunicorn with the app built inside each worker process (after fork).

Database connections must not cross a fork, so the runtime is created per worker in ``load()``.
"""

from __future__ import annotations

import os

from gunicorn.app.base import BaseApplication

from sidecar.config import Settings

# gunicorn creates each heartbeat file there with mkstemp and unlinks it at once: nothing is shared by name.
_MEMORY_DIR = "/dev/shm"  # noqa: S108


class SidecarGunicorn(BaseApplication):
    def __init__(self, settings: Settings, options: dict) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self):
        from sidecar.app import create_app
        from sidecar.bootstrap import build_runtime
        from sidecar.logs import configure_logging

        configure_logging(self.settings.log.format, self.settings.log.level)
        return create_app(build_runtime(self.settings))


def run_gunicorn(settings: Settings, host: str, port: int, workers: int) -> None:
    SidecarGunicorn(settings, {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": 4,
        # The bridge waits on MemberLux for at most the REST timeout when asked to (?wait=).
        "timeout": int(settings.memberlux.timeout_seconds) + 30,
        "graceful_timeout": 30,
        # Each worker touches a heartbeat file on every turn of its event loop (once per request or
        # more): on a disk-backed /tmp that is an inode write each time. Memory-backed when there is one.
        "worker_tmp_dir": _MEMORY_DIR if os.path.isdir(_MEMORY_DIR) else None,
        "accesslog": None,
        "limit_request_field_size": 8190,
        # The same networks the app trusts (sidecar.web.proxies), for gunicorn's own scheme handling.
        "forwarded_allow_ips": ",".join(settings.web.trusted_proxy_networks) if settings.web.trusted_proxies else "",
    }).run()
