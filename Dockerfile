# mlsidecar: one image for both production processes.
#   docker build -t mlsidecar .
#   docker run ... mlsidecar serve      (web: gunicorn, port 8080)
#   docker run ... mlsidecar worker     (the one scheduler + grant outbox; exactly one per site)
# No configuration or secret is baked in: mount the TOML file at /etc/mlsidecar/mlsidecar.toml (read-only)
# and pass secrets as environment variables (env:VARIABLE references) or files (file:/run/secrets/...).
# See docker-compose.example.yml and docs/deployment.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/mlsidecar --create-home \
        --shell /usr/sbin/nologin mlsidecar

WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
RUN pip install . && rm -rf /src

USER mlsidecar
WORKDIR /var/lib/mlsidecar
ENV MLS_CONFIG=/etc/mlsidecar/mlsidecar.toml \
    MLS_WEB__HOST=0.0.0.0
EXPOSE 8080

# Liveness of `serve` (/healthz touches no database). The worker has no HTTP port: disable this check
# for it (docker-compose.example.yml does) and watch its heartbeat with `mlsidecar doctor`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MLS_WEB__PORT', '8080'), timeout=4)"]

ENTRYPOINT ["mlsidecar"]
CMD ["serve"]
