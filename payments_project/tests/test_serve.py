"""The production web server (payments_project/serve.py): its settings and a real start."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from granian.constants import Interfaces

from payments_project import serve

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_a_worker_per_core_four_threads_an_access_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given the variables unset, or empty as .env.example leaves them
    for name in ("WEB_HOST", "PORT", "WEB_THREADS", "WEB_ACCESS_LOG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WEB_CONCURRENCY", "")
    monkeypatch.setenv("WEB_BACKLOG", " ")

    # when
    options = serve.options()

    # then
    assert options == {
        "target": "payments_project.wsgi:application",
        "interface": Interfaces.WSGI,
        "address": "0.0.0.0",  # noqa: S104 - what a container listens on
        "port": 8000,
        "workers": serve.cores(),
        "blocking_threads": 4,
        "backlog": 1024,
        "log_access": True,
        "workers_kill_timeout": 30,
        "respawn_failed_workers": True,
    }


def test_the_environment_overrides_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # given
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv("WEB_THREADS", "8")
    monkeypatch.setenv("WEB_ACCESS_LOG", "off")
    monkeypatch.setenv("PORT", "9000")

    # when
    options = serve.options()

    # then
    assert (options["workers"], options["blocking_threads"], options["log_access"], options["port"]) == (
        3,
        8,
        False,
        9000,
    )


def test_a_flag_that_is_not_a_boolean_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_ACCESS_LOG", "maybe")

    with pytest.raises(ImproperlyConfigured, match="WEB_ACCESS_LOG must be a boolean"):
        serve.options()


def test_cores_honour_a_cgroup_cpu_quota(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # given a container limited to 1.5 CPUs on a host where the process may run on 8 cores
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    real_path = serve.Path
    monkeypatch.setattr(serve, "Path", lambda p: cpu_max if p == "/sys/fs/cgroup/cpu.max" else real_path(p))

    # when / then: the quota rounded up
    assert serve.cores() == 2

    # and without a quota, the affinity
    cpu_max.write_text("max 100000\n")
    assert serve.cores() == 8


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_server_answers_logs_the_request_and_stops_on_sigterm() -> None:
    # given the Dockerfile's command on a free loopback port, one worker
    port = _free_port()
    env = {**os.environ, "WEB_HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "payments_project.serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        # when it is up and asked for /health/live
        body = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not body:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=2) as response:
                    body = response.read()
            except OSError:
                time.sleep(0.2)

        # then it answered, and stops cleanly on SIGTERM with the request in its access log
        assert body == b'{"status": "up"}'
        os.killpg(process.pid, signal.SIGTERM)
        out, _ = process.communicate(timeout=40)
        assert process.returncode == 0
        assert '"GET /health/live HTTP/1.1" 200' in out
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.parametrize("name", ["WEB_THREADS", "WEB_CONCURRENCY", "WEB_WORKER_KILL_TIMEOUT"])
def test_zero_threads_workers_or_kill_timeout_are_refused(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "0")

    with pytest.raises(ImproperlyConfigured, match=f"{name} must be at least 1, got 0"):
        serve.options()
