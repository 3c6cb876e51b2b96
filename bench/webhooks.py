"""Inbound Stripe events: intake and processing rates, none lost or processed twice, a worker killed.

    .venv/bin/python bench/webhooks.py [--duration 10]

Against PostgreSQL and Redis: starts the Stripe stand-in (dj-stripe reads the account from it),
the production server (`python -m payments_project.serve`, a worker per core, access log off) and
two Celery workers (solo pool, the Redis broker) that load bench/lib/webhook_effects.py, which
writes a row each time an event's processing takes effect, inside that processing's transaction.
A load generator (wrk when installed, else aiohttp; 16 connections) posts distinct signed
`balance.available` events (dj-stripe stores them, no Stripe call) to the webhook URL for
`--duration` seconds; halfway through, one worker is killed with SIGKILL. Then the bench waits
until every accepted event took effect, running the inbox's sweep as beat would (the stale limits
are shortened to 10 s pending / 15 s processing so the killed worker's event is recovered within
the run instead of after 10 minutes).

The workers run at a quarter of the server's CPU weight, as docker-compose.yml gives them
(`cpu_shares`): with both on the same cores, webhook answers come first and processing catches up
after. Started each in its own session, every process here is its own scheduling group under the
kernel's autogroup (the default on Debian): there a process's nice value only orders the
process's own threads, so the weight is set on the worker's group (/proc/PID/autogroup, nice 6 =
weight 272 against the server's 1024) and on the process (where autogroup is off).
BENCH_WORKER_NICE=0 gives the workers equal weight.

- intake_eps: events answered 2xx per second of load;
- processed_eps: events that took effect per second, from the first to the last of those
  processed on their first attempt (the killed worker's, recovered by the sweep, excluded);
- lost: accepted events (inbox rows) with no effect once the wait is over (5 minutes at most);
- doubled: events whose effect was written more than once.

Last line: `webhooks: intake_eps=N processed_eps=N lost=N doubled=N`.
Knobs: BENCH_DATABASE_URL, BENCH_REDIS_URL (cache), BENCH_BROKER_URL, WEB_CONCURRENCY,
BENCH_WORKER_NICE (6).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lib import wrk
from lib.procs import PYTHON, ROOT, database_create, free_port, migrate, start, stop, wait_http

CONNECTIONS = 16
SECRET = "whsec_bench_webhooks"  # noqa: S105 - the bench's own endpoint, local only
ENV = {
    "APP_ENV": "test",
    "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/payments_bench"),
    "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"),
    "CELERY_BROKER_URL": os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/13"),
    "CELERY_TASK_ALWAYS_EAGER": "0",
    "RATELIMIT_ENABLE": "0",
    "STRIPE_EVENTS_STALE_PENDING_SECONDS": "10",
    "STRIPE_EVENTS_STALE_PROCESSING_SECONDS": "15",
    "DJANGO_DEBUG": "0",
    "LOG_LEVEL": "WARNING",
    "LOG_FORMAT": "plain",
    "WEB_ACCESS_LOG": "0",
    "DJANGO_SETTINGS_MODULE": "payments_project.settings",
    "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'bench' / 'lib'}",
}


# A quarter of the server's CPU weight (docker-compose.yml: cpu_shares 256 against 1024): nice 6
# is weight 272 in the kernel's table.
WORKER_NICE = int(os.environ.get("BENCH_WORKER_NICE", "6"))


def cpu_weight_lower(process: subprocess.Popen[bytes]) -> str:
    """The process, and its autogroup, at nice WORKER_NICE; what was set, for the output."""
    if WORKER_NICE == 0:
        return "equal weight"
    os.setpriority(os.PRIO_PROCESS, process.pid, WORKER_NICE)
    try:
        Path(f"/proc/{process.pid}/autogroup").write_text(str(WORKER_NICE))
    except OSError:
        return f"nice {WORKER_NICE} (no autogroup)"
    return f"nice {WORKER_NICE}, autogroup too"


LOGS = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))


def start_logged(command: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    """A process of the bench, its output in LOGS/<name>.log (shown if the bench fails)."""
    return start(command, env={**ENV, **env}, log=LOGS / f"{name}.log")


# --- setup (this process) -----------------------------------------------------------------------


def database_prepare(standin_url: str) -> str:
    """Migrated database, emptied inbox, the effects table; returns the webhook URL path."""
    database_create(ENV["DATABASE_URL"])
    env = {**ENV, "STRIPE_API_BASE": standin_url}
    migrate(env, timeout=600)
    os.environ.update(env)
    import django

    django.setup()
    from django.db import connection

    from billing.stripe.services import webhook_endpoint_ensure

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS bench_webhook_effects"
            " (event_id text NOT NULL, at timestamptz NOT NULL)"
        )
        cursor.execute(
            "TRUNCATE bench_webhook_effects, billing_stripeevent, djstripe_event,"
            " djstripe_webhookeventtrigger RESTART IDENTITY CASCADE"
        )
    endpoint = webhook_endpoint_ensure(secret=SECRET, base_url="http://127.0.0.1")
    return f"/djstripe/webhook/{endpoint.djstripe_uuid}/"


def events_write(path: Path, count: int) -> None:
    """`count` distinct signed events, one per line: signature TAB body."""
    run = os.urandom(4).hex()
    now = int(time.time())
    with path.open("w") as out:
        for n in range(count):
            body = json.dumps(
                {
                    "id": f"evt_bench_{run}_{n:07d}",
                    "object": "event",
                    "api_version": "2024-06-20",
                    "created": now,
                    "data": {"object": {"object": "balance", "available": [], "livemode": False}},
                    "livemode": False,
                    "pending_webhooks": 1,
                    "request": {"id": None, "idempotency_key": None},
                    "type": "balance.available",
                },
                separators=(",", ":"),
            )
            mac = hmac.new(SECRET.encode(), f"{now}.{body}".encode(), hashlib.sha256).hexdigest()
            out.write(f"t={now},v1={mac}\t{body}\n")


# --- load ---------------------------------------------------------------------------------------

WRK_SCRIPT = """
local lines = {}
local index = 0
local step = 1
function setup(thread)
  thread:set("id", #threads_seen)
  table.insert(threads_seen, thread)
end
threads_seen = {}
function init(args)
  index = tonumber(id)
  step = tonumber(args[2])
  for line in io.lines(args[1]) do table.insert(lines, line) end
end
function request()
  index = index + step
  local line = lines[index]
  if line == nil then line = lines[#lines] end
  local tab = string.find(line, "\\t")
  local headers = {["Content-Type"] = "application/json", ["Stripe-Signature"] = string.sub(line, 1, tab - 1)}
  return wrk.format("POST", PATH, headers, string.sub(line, tab + 1))
end
"""


def load_wrk(url: str, path: str, events: Path, duration: float, threads: int) -> dict[str, Any]:
    result = wrk.run(
        f'PATH = "{path}"\n' + WRK_SCRIPT,
        url=url,
        connections=CONNECTIONS,
        threads=threads,
        duration=duration,
        args=(str(events), str(threads)),
        timeout_s=10,
    )
    return {"requests": result["requests"], "accepted": result["ok"], "generator": "wrk"}


async def _load_aiohttp(url: str, path: str, events: Path, duration: float) -> dict[str, Any]:
    import aiohttp

    lines = events.read_text().splitlines()
    counts = {"requests": 0, "accepted": 0}
    deadline = time.monotonic() + duration
    position = iter(range(len(lines)))

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            n = next(position, None)
            if n is None:
                return
            signature, body = lines[n].split("\t", 1)
            headers = {"Content-Type": "application/json", "Stripe-Signature": signature}
            async with session.post(url + path, data=body, headers=headers) as response:
                await response.read()
                counts["requests"] += 1
                counts["accepted"] += 200 <= response.status < 300

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(CONNECTIONS)))
    return {**counts, "generator": "aiohttp"}


# --- main ---------------------------------------------------------------------------------------


def counts() -> tuple[int, int, int]:
    """(inbox rows, events with an effect, events with more than one)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM billing_stripeevent")
        inbox = cursor.fetchone()[0]
        cursor.execute(
            "SELECT count(*), count(*) FILTER (WHERE n > 1)"
            " FROM (SELECT count(*) AS n FROM bench_webhook_effects GROUP BY event_id) AS per_event"
        )
        effected, doubled = cursor.fetchone()
    return inbox, effected, doubled


def processed_rate() -> float:
    """Events per second among those processed on their first attempt, first to last."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), extract(epoch FROM max(e.at) - min(e.at)) FROM bench_webhook_effects e"
            " JOIN billing_stripeevent s ON s.stripe_event_id = e.event_id WHERE s.attempts = 1"
        )
        n, seconds = cursor.fetchone()
    return n / float(seconds) if n and seconds else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    began = time.monotonic()
    standin_port, web_port = free_port(), free_port()
    standin_url = f"http://127.0.0.1:{standin_port}"
    standin = start_logged(
        [PYTHON, "-m", "devtools.stripe_standin", "--host", "127.0.0.1", "--port", str(standin_port)],
        {},
        "standin",
    )
    processes = [standin]
    try:
        wait_http(f"{standin_url}/v1/account")
        path = database_prepare(standin_url)
        import redis

        redis.Redis.from_url(ENV["CELERY_BROKER_URL"]).flushdb()
        redis.Redis.from_url(ENV["REDIS_URL"]).flushdb()
        print(f"database ready in {time.monotonic() - began:.1f}s", flush=True)
        with tempfile.TemporaryDirectory() as folder:
            events = Path(folder) / "events.tsv"
            events_write(events, int(args.duration * 6000))
            server = start_logged(
                [PYTHON, "-m", "payments_project.serve"],
                {"WEB_HOST": "127.0.0.1", "PORT": str(web_port), "STRIPE_API_BASE": standin_url},
                "web",
            )
            processes.append(server)
            worker_cmd = [PYTHON, "-m", "celery", "-A", "payments_project", "worker", "--pool=solo"]
            worker_cmd += [
                "--loglevel=WARNING",
                "--include=webhook_effects",
                "--without-gossip",
                "--without-mingle",
            ]
            workers = [
                start_logged(
                    [*worker_cmd, f"--hostname=bench{n}@%h"], {"STRIPE_API_BASE": standin_url}, f"worker{n}"
                )
                for n in (1, 2)
            ]
            processes += workers
            weight = ", ".join(sorted({cpu_weight_lower(worker) for worker in workers}))
            wait_http(f"http://127.0.0.1:{web_port}/health/live")
            time.sleep(3)  # the workers connect to the broker

            # load, with one worker killed halfway
            url = f"http://127.0.0.1:{web_port}"
            killed: dict[str, float] = {}

            def kill_later() -> None:
                time.sleep(args.duration / 2)
                os.killpg(workers[0].pid, signal.SIGKILL)
                killed["at"] = time.monotonic()

            import threading

            killer = threading.Thread(target=kill_later)
            load_start = time.monotonic()
            killer.start()
            if wrk.available():
                load = load_wrk(url, path, events, args.duration, threads=2)
            else:
                load = asyncio.run(_load_aiohttp(url, path, events, args.duration))
            load_seconds = time.monotonic() - load_start
            killer.join()
            inbox, _, _ = counts()
            print(
                f"intake   {load['accepted'] / load_seconds:9.1f} events/s  ({load['accepted']} accepted of"
                f" {load['requests']} posted in {load_seconds:.1f}s, {load['generator']});"
                f" worker 1 killed at {killed['at'] - load_start:.1f}s; workers at {weight}",
                flush=True,
            )

            # drain: wait until every accepted event took effect, sweeping as beat would
            from billing.stripe.services import stripe_events_sweep

            deadline = time.monotonic() + 300
            effected = 0
            while time.monotonic() < deadline:
                inbox, effected, doubled = counts()
                if effected >= inbox:
                    break
                stripe_events_sweep()
                time.sleep(1)
            inbox, effected, doubled = counts()
            drained = time.monotonic() - load_start
            rate = processed_rate()
            print(
                f"process  {rate:9.1f} events/s  ({effected} of {inbox} took effect within {drained:.1f}s"
                " of the load's start, 1 worker left)",
                flush=True,
            )
    except BaseException:
        print(f"the bench failed; the processes' output is in {LOGS}", file=sys.stderr)
        raise
    finally:
        for process in reversed(processes):
            stop(process)
    shutil.rmtree(LOGS, ignore_errors=True)
    print(f"total {time.monotonic() - began:.1f}s")
    print(
        f"webhooks: intake_eps={load['accepted'] / load_seconds:.0f} processed_eps={rate:.0f}"
        f" lost={inbox - effected} doubled={doubled}"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
