"""Outbox relay throughput and commit-to-broker latency, against PostgreSQL and a local broker.

    .venv/bin/python bench/events.py [--backlog 100000] [--rate 500] [--seconds 10]

Migrates PostgreSQL (BENCH_DATABASE_URL, default `payments_bench`), starts Tansu on loopback
(devtools.kafka_broker; BENCH_KAFKA_PORT, default a free port) with a 6-partition topic, then:

1. throughput: writes a backlog of 100,000 events (1,000 aggregates; bulk inserts, not timed),
   then one relay publishes it (claim, produce with acks=all, wait for every acknowledgement,
   mark): events/s from the first claim to the last marking;
2. latency: two writer processes record 500 events/s together, each event in its own
   transaction, for 10 s while a relay runs as in production (woken by NOTIFY); per event, from
   its commit to the broker's acknowledgement as the relay saw it (p50, p99).

Stops the broker itself; the last line is `events: relay_eps=N commit_to_broker_p99_ms=N`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from lib.procs import database_create  # noqa: E402

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/payments_bench")
os.environ.update(
    {
        "APP_ENV": "test",
        "DATABASE_URL": DATABASE_URL,
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "plain",
        "EVENTS_VALIDATE_PAYLOADS": "0",  # as in production
        "DJANGO_SETTINGS_MODULE": "payments_project.settings",
    }
)
AGGREGATES = 1_000
# A subscription.status_changed payload: a typical event's size.
PAYLOAD = {
    "subscription_id": 1,
    "user_id": 1,
    "plan": "pro",
    "status": "active",
    "amount": 999,
    "currency": "USD",
    "family_id": None,
    "current_period_end": "2026-12-01T00:00:00.000000Z",
    "cancel_at_period_end": False,
    "stripe_subscription_id": "sub_bench",
    "from_status": "trialing",
    "to_status": "active",
    "cause": "webhook",
}


def database_prepare() -> None:
    database_create(DATABASE_URL)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def backlog_write(count: int) -> None:
    """`count` unpublished events over AGGREGATES aggregates, numbered as event_record numbers them."""
    from django.db import transaction
    from django.utils import timezone

    from payments_project.events.ids import uuid7
    from payments_project.events.models import AggregateSequence, DomainEvent
    from subscriptions.events import SUBSCRIPTION_STATUS_CHANGED

    DomainEvent.objects.all().delete()
    AggregateSequence.objects.all().delete()
    payload = dict(PAYLOAD)
    now = timezone.now()
    per_aggregate = count // AGGREGATES
    rows = []
    for sequence in range(1, per_aggregate + 1):
        for aggregate in range(AGGREGATES):
            rows.append(
                DomainEvent(
                    id=uuid7(),
                    type=SUBSCRIPTION_STATUS_CHANGED.name,
                    schema_version=1,
                    aggregate_type="subscription",
                    aggregate_id=str(aggregate),
                    sequence=sequence,
                    occurred_at=now,
                    actor_type="stripe",
                    actor_id="evt_bench",
                    payload={**payload, "subscription_id": aggregate + 1},
                )
            )
    with transaction.atomic():
        DomainEvent.objects.bulk_create(rows, batch_size=5_000)
        AggregateSequence.objects.bulk_create(
            [
                AggregateSequence(
                    aggregate_type="subscription", aggregate_id=str(a), last_sequence=per_aggregate
                )
                for a in range(AGGREGATES)
            ]
        )
    from django.db import connection

    # Fresh planner statistics, as autovacuum keeps them in production: just after a bulk insert
    # the planner believes the table empty and picks plans 10x slower for the claim.
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE events_domainevent")


def throughput(relay: Any) -> float:
    from payments_project.events.selectors import events_backlog

    total = events_backlog().rows
    started = time.perf_counter()
    while relay.publish_once():
        pass
    elapsed = time.perf_counter() - started
    left = events_backlog().rows
    if left or relay.errors:
        raise SystemExit(f"relay left {left} events, {relay.errors} errors")
    return total / elapsed


WRITERS = 2  # writer processes: one Python process cannot commit 500 transactions/s here


def _writer(index: int, count: int, rate: float, start_at: float, results: Any) -> None:
    """A writer process: `count` events at `rate`/s from `start_at` (a CLOCK_MONOTONIC time, the
    same in every process), each in its own transaction; sends {event id: commit time}."""
    import django

    django.setup()
    from django.db import transaction

    from payments_project.events.services import event_record
    from subscriptions.events import SUBSCRIPTION_STATUS_CHANGED

    committed: dict[str, float] = {}
    for n in range(count):
        pause = start_at + n / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        aggregate = (n * WRITERS + index) % AGGREGATES
        with transaction.atomic():
            row = event_record(
                event_type=SUBSCRIPTION_STATUS_CHANGED,
                aggregate_id=str(aggregate),
                payload={**PAYLOAD, "subscription_id": aggregate + 1},
            )
        assert row is not None
        committed[str(row.id)] = time.monotonic()
    results.put(committed)


def latency(relay_class: Any, config: Any, *, rate: int, seconds: float) -> list[float]:
    """Milliseconds from each event's commit (in the writer processes) to its acknowledgement (as
    the relay, running here as in production, saw it)."""
    import multiprocessing

    from django.db import connection

    acked: dict[str, float] = {}

    class Timed(relay_class):  # type: ignore[misc, valid-type]
        def _record(self, claimed: Any, outcome: Any) -> None:
            now = time.monotonic()
            for event_id in outcome.acked:
                acked[str(event_id)] = now
            super()._record(claimed, outcome)

    stop = threading.Event()
    relay = Timed(relay_id="bench-latency", config=config)
    thread = threading.Thread(target=relay.run, args=(stop,))
    thread.start()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.monotonic() + 3.0  # the writers have imported Django by then
    each = int(rate * seconds) // WRITERS
    writers = [
        context.Process(target=_writer, args=(index, each, rate / WRITERS, start_at, results))
        for index in range(WRITERS)
    ]
    for writer in writers:
        writer.start()
    committed: dict[str, float] = {}
    for _ in writers:
        committed.update(results.get(timeout=seconds + 120))
    for writer in writers:
        writer.join(timeout=10)
    finished = max(committed.values())
    deadline = time.monotonic() + 30
    while len(acked.keys() & committed.keys()) < len(committed) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=15)
    connection.close()
    print(f"  writers: {len(committed)} events in {finished - start_at:.1f} s (planned {seconds:.1f} s)")
    missing = len(committed) - len(acked.keys() & committed.keys())
    if missing:
        raise SystemExit(f"{missing} events were never acknowledged")
    return [(acked[event_id] - at) * 1000 for event_id, at in committed.items()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    database_prepare()
    from devtools.kafka_broker import TansuBroker

    with TansuBroker(port=int(os.environ.get("BENCH_KAFKA_PORT") or 0)) as broker:
        broker.topic_create("payment-events-bench", partitions=6)
        from django.conf import settings

        settings.KAFKA_BOOTSTRAP_SERVERS = broker.bootstrap_servers
        settings.KAFKA_TOPIC = "payment-events-bench"
        from payments_project.events.relay import Relay, RelayConfig

        config = RelayConfig.from_settings(heartbeat_seconds=5)
        print(
            f"events bench: PostgreSQL {DATABASE_URL.rsplit('/', 1)[-1]}, Tansu on {broker.bootstrap_servers}"
        )

        backlog_write(args.backlog)
        eps = throughput(Relay(relay_id="bench-throughput", config=config))
        print(f"  throughput: {args.backlog} events published and marked at {eps:,.0f} events/s")

        millis = sorted(latency(Relay, config, rate=args.rate, seconds=args.seconds))
        p50 = statistics.median(millis)
        p99 = millis[min(len(millis) - 1, int(len(millis) * 0.99))]
        print(
            f"  latency at {args.rate}/s: commit to broker ack p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
            f"max {millis[-1]:.1f} ms"
        )
    print(f"events: relay_eps={eps:.0f} commit_to_broker_p99_ms={p99:.0f}")


if __name__ == "__main__":
    main()
