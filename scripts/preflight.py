"""Stop at once, with one line saying what to do, when PostgreSQL or Redis is not reachable or
Debian's chromium (for the browser tests) is not installed.

Run by `make test` before pytest (whose own failure would be a long traceback much later).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from urllib.parse import urlparse

CHECKS = {
    "DATABASE_URL": (
        "postgres://postgres@127.0.0.1:5432/payments",
        "PostgreSQL",
        "start it: pg_ctlcluster 15 main start (or docker compose up -d postgres)",
    ),
    "REDIS_URL": (
        "redis://127.0.0.1:6379/15",
        "Redis",
        "start it: redis-server --daemonize yes (or docker compose up -d redis)",
    ),
}


def reachable(url: str) -> bool:
    parsed = urlparse(url)
    port = parsed.port or {"postgres": 5432, "postgresql": 5432, "redis": 6379}.get(parsed.scheme, 0)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


CHROMIUM = "/usr/bin/chromium"  # what the browser tests drive (payments_project/backoffice/tests)


def main() -> int:
    if not os.access(CHROMIUM, os.X_OK):
        print(f"Chromium is missing ({CHROMIUM}): apt-get install -y chromium.", file=sys.stderr)
        return 2
    for name, (default, what, how) in CHECKS.items():
        url = os.environ.get(name, default)
        if not url.startswith(("postgres", "redis")):
            print(f"{name}={url} is not {what}: tests run on PostgreSQL and Redis only.", file=sys.stderr)
            return 2
        if not reachable(url):
            parsed = urlparse(url)
            where = f"{parsed.hostname}:{parsed.port}"
            print(f"{what} is not reachable at {where} ({name}); {how}.", file=sys.stderr)
            return 2
    if shutil.which("redis-server") is None:
        # The Redis outage tests start (and pause, and kill) a redis-server of their own.
        print("redis-server is not installed: apt-get install redis-server.", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
