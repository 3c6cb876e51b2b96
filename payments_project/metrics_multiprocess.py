"""Prometheus multiprocess mode for the production server: /metrics sums every granian worker.

Each worker of `python -m payments_project.serve` is its own process with its own counters; a
scrape reaches one of them. With PROMETHEUS_MULTIPROC_DIR set (serve.py sets it before the workers
start) prometheus_client writes every process's values to files in that folder, and
django-prometheus's /metrics view adds them up (counters and histograms summed; each gauge as its
`multiprocess_mode` says). A worker that died leaves its files: counters keep counting what it
did, and `live*` gauges drop it once `metrics_forget_dead_processes` has seen it gone (each worker
calls it when it starts, granian starting one in place of a dead one).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from prometheus_client import multiprocess

ENV = "PROMETHEUS_MULTIPROC_DIR"
_PID = re.compile(r"_(\d+)\.db$")


def metrics_dir_prepare() -> tuple[str, bool]:
    """The folder for this server's metric files, emptied (a previous run's values must not
    count); (path, created) where created says serve.py made it and removes it at exit."""
    configured = os.environ.get(ENV, "").strip()
    if not configured:
        path = tempfile.mkdtemp(prefix="payments-metrics-")
        os.environ[ENV] = path
        return path, True
    folder = Path(configured)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    return configured, False


def metrics_dir_remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def metrics_forget_dead_processes() -> list[int]:
    """Drop the live gauges of processes that no longer exist; their pids."""
    folder = os.environ.get(ENV, "").strip()
    if not folder or not os.path.isdir(folder):
        return []
    pids = {int(match.group(1)) for name in os.listdir(folder) if (match := _PID.search(name))}
    dead = [pid for pid in sorted(pids) if not _alive(pid)]
    for pid in dead:
        multiprocess.mark_process_dead(pid, folder)
    return dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
