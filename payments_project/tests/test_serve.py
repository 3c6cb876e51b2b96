"""The production web server (payments_project/serve.py): its settings and a real start."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from granian.constants import Interfaces
from rest_framework.authtoken.models import Token

from devtools.faulty_stripe import FaultyStripe
from devtools.testing import StandinServer
from payments_project import serve
from payments_project.accounts.tests.factories import UserFactory

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


BUDGET = 2.0


def _serve(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """The production server on a free loopback port, one worker; returns it once it answers."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "payments_project.serve"],
        cwd=ROOT,
        env={**os.environ, "WEB_HOST": "127.0.0.1", "PORT": str(port), "WEB_ACCESS_LOG": "0", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/health/live", timeout=2):
                return process, base
        except OSError:
            time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError("the server did not start")


def _request(
    url: str, *, token: str = "", body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), _lower(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), _lower(error.headers)


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


@pytest.mark.django_db(transaction=True)
def test_with_stripe_hung_concurrent_payments_answer_within_the_budget_and_the_breaker_opens(
    stripe_standin: StandinServer,
) -> None:
    # given the production server (one worker, 8 threads) whose Stripe accepts and never answers,
    # a Stripe budget of 2 s per request, and a breaker opening after 3 outages for 2 s
    token = Token.objects.create(user=UserFactory(username="payer")).key
    with FaultyStripe() as front:
        process, base = _serve(
            {
                "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}",
                "STRIPE_API_BASE": front.url,
                "STRIPE_REQUEST_BUDGET_SECONDS": str(BUDGET),
                "STRIPE_TIMEOUT_SECONDS": "1.5",
                "STRIPE_BREAKER_FAIL_MAX": "3",
                "STRIPE_BREAKER_RESET_SECONDS": "2",
                "STRIPE_SLOW_CALL_SECONDS": "0.3",
                "WEB_CONCURRENCY": "1",
                "WEB_THREADS": "8",
                "DJANGO_DEBUG": "0",
            }
        )
        try:
            # when five customers pay at once
            answers: list[tuple[int, dict[str, Any], dict[str, str], float]] = []

            def pay() -> None:
                started = time.monotonic()
                answer = _request(
                    f"{base}/api/v1/payments/", token=token, body={"amount": 1500, "currency": "EUR"}
                )
                answers.append((*answer, time.monotonic() - started))

            payers = [threading.Thread(target=pay) for _ in range(5)]
            for payer in payers:
                payer.start()
            # and /health is asked while they wait
            during: dict[str, Any] = {}
            while any(payer.is_alive() for payer in payers):
                _, health, _ = _request(f"{base}/health")
                if health["components"]["stripe"]["slow_calls"]:
                    during = health["components"]["stripe"]
                    break
                time.sleep(0.05)
            for payer in payers:
                payer.join(timeout=30)

            # then they waited on Stripe together, each answered 503 with Retry-After within the
            # budget + 1 s, health said degraded meanwhile and down once the breaker opened
            assert front.peak_open == 5
            assert (
                sorted((status, body["error"]["code"]) for status, body, _, _ in answers)
                == [(503, "stripe_unavailable")] * 5
            )
            assert all(int(headers["retry-after"]) >= 1 for _, _, headers, _ in answers)
            assert max(seconds for *_, seconds in answers) <= BUDGET + 1
            assert (during["status"], during["circuit_breaker"]) == ("degraded", "closed")
            status, health, _ = _request(f"{base}/health")
            assert (status, health["components"]["stripe"]["status"]) == (503, "down")
            refused = _request(
                f"{base}/api/v1/payments/", token=token, body={"amount": 1500, "currency": "EUR"}
            )
            assert (refused[0], refused[1]["error"]["message"]) == (
                503,
                "Stripe is unavailable; try again shortly.",
            )

            # when Stripe answers again
            front.forward(int(stripe_standin.url.rsplit(":", 1)[1]))
            paid: tuple[int, dict[str, Any], dict[str, str]] = (0, {}, {})
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                paid = _request(
                    f"{base}/api/v1/payments/", token=token, body={"amount": 1500, "currency": "EUR"}
                )
                if paid[0] != 503:
                    break
                time.sleep(0.2)

            # then the breaker's trial goes through, the payment is made and health is up again
            assert (paid[0], paid[1]["status"]) == (201, "requires_payment_method")
            status, health, _ = _request(f"{base}/health")
            assert (status, health["components"]["stripe"]["status"]) == (200, "up")
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _sample(text: str, name: str, labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(part in line for part in labels.split(",")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} with {labels} in /metrics")


def test_metrics_add_up_every_worker(tmp_path: Path) -> None:
    # given the production server with two workers writing their metrics to one folder
    folder = tmp_path / "metrics"
    process, base = _serve({"WEB_CONCURRENCY": "2", "PROMETHEUS_MULTIPROC_DIR": str(folder)})
    try:
        # when 40 requests are made, each on its own connection (the kernel spreads them over both)
        for _ in range(40):
            assert _request(f"{base}/health/live")[0] == 200
        pids = {name.rsplit("_", 1)[1] for name in os.listdir(folder) if name.startswith("counter_")}

        # then both workers counted some, and /metrics, whichever worker answers, reads all 40
        # (plus the one _serve made to see the server up)
        assert len(pids) == 2
        for _ in range(4):
            with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
                text = response.read().decode()
            served = _sample(
                text,
                "django_http_responses_total_by_status_view_method_total",
                'method="GET",status="200",view="health-live"',
            )
            assert served == 40 + 1
            assert _sample(text, "circuit_breaker_state", 'name="stripe"') == 0
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
