"""The relay against a real Kafka-protocol broker on loopback (Tansu): what it publishes, crashes
at the worst moments, two relays at once, a broker outage, and the NOTIFY wake-up."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from devtools.kafka_broker import TansuBroker
from payments_project.events.kafka import TopicMessage
from payments_project.events.models import DomainEvent, RelayHeartbeat
from payments_project.events.relay import Outcome, Relay
from payments_project.events.selectors import event_envelope, events_backlog
from payments_project.events.services import ClaimedEvent, event_record
from payments_project.events.tests.conftest import make_relay, read_topic
from payments_project.events.tests.factories import TEST_EVENT, DomainEventFactory


class Killed(BaseException):
    """The process dies here: nothing after this point runs (not even `finally` in the relay's
    own step, which has none between its broker wait and its marking)."""


class DiesAfterAcknowledgement(Relay):
    def _record(self, claimed: list[ClaimedEvent], outcome: Outcome) -> None:
        assert len(outcome.acked) == len(claimed)  # the broker has every one of them
        raise Killed


class DiesBeforePublishing(Relay):
    def _publish(self, claimed: list[ClaimedEvent]) -> Outcome:
        raise Killed


def _record(spec: list[tuple[str, int]]) -> list[DomainEvent]:
    """Events (aggregate id, n) each in its own transaction, as separate requests would."""
    rows = []
    for aggregate, n in spec:
        with transaction.atomic():
            row = event_record(event_type=TEST_EVENT, aggregate_id=aggregate, payload={"n": n, "note": "t"})
        assert row is not None
        rows.append(row)
    return rows


def _by_key(messages: list[TopicMessage]) -> dict[str, list[tuple[int, str]]]:
    """Per key, (partition, sequence) in the order consumed."""
    seen: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for message in messages:
        seen[message.key].append((message.partition, json.loads(message.value)["sequence"]))
    return dict(seen)


SPEC = [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("a", 3)]


@pytest.mark.django_db
def test_the_relay_publishes_each_event_keyed_by_aggregate_with_its_id_header_and_envelope(
    kafka_topic: str,
) -> None:
    rows = _record(SPEC)

    assert make_relay("r1").publish_once() == 5

    messages = read_topic(kafka_topic, count=5)
    by_id = {message.headers["ce_id"]: message for message in messages}
    assert sorted(by_id) == sorted(str(row.pk) for row in rows)
    for row in rows:
        message = by_id[str(row.pk)]
        assert message.key == f"thing/{row.aggregate_id}"
        assert json.loads(message.value) == {**event_envelope(row), "id": str(row.pk)}
        assert (message.headers["ce_type"], message.headers["content-type"]) == (
            "test.recorded",
            "application/cloudevents+json; charset=UTF-8",
        )
    assert {k: [s for _, s in v] for k, v in _by_key(messages).items()} == {
        "thing/a": ["1", "2", "3"],
        "thing/b": ["1"],
        "thing/c": ["1"],
    }
    assert len({partition for partition, _ in _by_key(messages)["thing/a"]}) == 1
    assert set(DomainEvent.objects.values_list("claimed_by", "publish_count")) == {("r1", 1)}
    assert DomainEvent.objects.filter(published_at__isnull=True).count() == 0


@pytest.mark.django_db
def test_killed_after_the_broker_acknowledged_and_restarted_consumers_dedupe_to_one_effect(
    kafka_topic: str,
) -> None:
    # given a relay that dies after the broker acknowledged its batch, before marking it
    rows = _record(SPEC)
    with pytest.raises(Killed):
        DiesAfterAcknowledgement(relay_id="host:1", config=make_relay("x").config).publish_once()
    assert events_backlog().rows == 5

    # when it is restarted (same name: it takes its leased rows back at once) and runs
    assert make_relay("host:1").publish_once() == 5

    # then consumers saw every event twice, and applying each id once gives one effect per event
    messages = read_topic(kafka_topic, count=10)
    assert len(messages) == 10
    effects: dict[str, dict[str, Any]] = {}
    for message in messages:
        effects.setdefault(message.headers["ce_id"], json.loads(message.value)["data"])
    assert sorted(effects) == sorted(str(row.pk) for row in rows)
    assert sorted(effect["n"] for effect in effects.values()) == [1, 1, 1, 2, 3]
    assert events_backlog().rows == 0


@pytest.mark.django_db
def test_killed_before_publishing_nothing_is_lost(kafka_topic: str) -> None:
    rows = _record(SPEC)
    with pytest.raises(Killed):
        DiesBeforePublishing(relay_id="host:2", config=make_relay("x").config).publish_once()

    assert make_relay("host:2").publish_once() == 5

    messages = read_topic(kafka_topic, count=10, idle_timeout=3)
    assert sorted(message.headers["ce_id"] for message in messages) == sorted(str(row.pk) for row in rows)


@pytest.mark.django_db
def test_a_broker_outage_keeps_every_event_and_the_backlog_drains_when_it_returns(
    kafka_topic: str, kafka_broker: TansuBroker
) -> None:
    relay = make_relay("r1")
    _record(SPEC[:2])
    assert relay.publish_once() == 2

    # given the broker goes down (Tansu keeps topics in memory: they go with it)
    kafka_broker.stop()
    later = _record(SPEC[2:])

    # when the relay tries, then nothing is acknowledged and every row stays, freed for a retry
    assert relay.publish_once() == 3
    assert (relay.state, relay.errors, events_backlog().rows) == (RelayHeartbeat.State.BROKER_DOWN, 3, 3)
    assert DomainEvent.objects.filter(published_at__isnull=True, last_error="").count() == 0
    assert relay._broker_reachable() is False

    # when the broker is back (its topic created again), the relay drains the backlog
    kafka_broker.start()
    kafka_broker.topic_create(kafka_topic, partitions=3)
    for _ in range(10):
        if relay._broker_reachable() and relay.publish_once() and events_backlog().rows == 0:
            break
    assert events_backlog().rows == 0
    assert relay.state == RelayHeartbeat.State.PUBLISHING
    messages = read_topic(kafka_topic, count=3)
    assert sorted(message.headers["ce_id"] for message in messages) == sorted(str(row.pk) for row in later)


def _run(relay: Relay, stop: threading.Event, errors: list[BaseException]) -> threading.Thread:
    def target() -> None:
        try:
            relay.run(stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=target, name=relay.relay_id)
    thread.start()
    return thread


def _wait_for(condition: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


class MeetsItsPeer(Relay):
    """Holds its first batch until the other relay has claimed one too: both hold leases at once."""

    def __init__(self, *, claimed: dict[str, threading.Event], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.claimed = claimed

    def _publish(self, claimed: list[ClaimedEvent]) -> Outcome:
        self.claimed[self.relay_id].set()
        for name, event in self.claimed.items():
            if name != self.relay_id:
                event.wait(timeout=10)
        return super()._publish(claimed)


@pytest.mark.django_db(transaction=True)
def test_two_relays_at_once_publish_each_event_once_in_order_per_aggregate(kafka_topic: str) -> None:
    # given 240 committed events, 20 for each of 12 aggregates, written one aggregate after another
    rows = _record([(f"agg-{i // 20}", i) for i in range(240)])
    stop, errors = threading.Event(), list[BaseException]()
    claimed = {"relay-1": threading.Event(), "relay-2": threading.Event()}

    # when two relays (batches of 20) run together until the outbox is empty
    threads = [
        _run(
            MeetsItsPeer(relay_id=name, config=make_relay(name, batch=20).config, claimed=claimed),
            stop,
            errors,
        )
        for name in claimed
    ]
    drained = _wait_for(lambda: events_backlog().rows == 0)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)

    # then both held leases at once, each event was published once, and each aggregate in order
    assert (drained, errors) == (True, [])
    assert set(DomainEvent.objects.values_list("publish_count", flat=True)) == {1}
    assert set(DomainEvent.objects.values_list("claimed_by", flat=True)) == {"relay-1", "relay-2"}
    messages = read_topic(kafka_topic, count=len(rows) + 1, idle_timeout=3)
    assert sorted(message.headers["ce_id"] for message in messages) == sorted(str(row.pk) for row in rows)
    for key, seen in _by_key(messages).items():
        assert [int(sequence) for _, sequence in seen] == list(range(1, 21)), key
        assert len({partition for partition, _ in seen}) == 1, key
    assert set(RelayHeartbeat.objects.filter(relay_id__in=claimed).values_list("relay_id", "state")) == {
        ("relay-1", "stopped"),
        ("relay-2", "stopped"),
    }
    connection.close()


@pytest.mark.django_db(transaction=True)
def test_a_commit_wakes_the_relay_through_listen_notify(kafka_topic: str) -> None:
    # given an idle relay that would poll only every 60 s
    stop, errors = threading.Event(), list[BaseException]()
    thread = _run(
        make_relay("r-listen", poll_seconds=60, heartbeat_seconds=60, lease_seconds=70), stop, errors
    )
    assert _wait_for(lambda: RelayHeartbeat.objects.filter(relay_id="r-listen", state="idle").exists())

    # when an event commits, then it is on the topic well before the next poll
    (row,) = _record([("a", 1)])
    messages = read_topic(kafka_topic, count=1, idle_timeout=20)
    stop.set()
    thread.join(timeout=10)

    assert [message.headers["ce_id"] for message in messages] == [str(row.pk)]
    assert errors == []
    connection.close()


@pytest.mark.django_db
def test_events_tail_prints_the_events_on_the_topic(kafka_topic: str) -> None:
    _record(SPEC[:2])
    make_relay("r1").publish_once()
    out = StringIO()

    call_command("events_tail", "--from-beginning", "--max", "2", stdout=out)

    lines = sorted(out.getvalue().splitlines())
    assert len(lines) == 2
    assert all(" test.recorded thing/" in line and " #1 by system:" in line for line in lines)


def test_without_a_broker_the_relay_command_says_it_is_off(settings: Any) -> None:
    settings.KAFKA_BOOTSTRAP_SERVERS = ""
    out = StringIO()

    call_command("events_relay", stdout=out)

    assert out.getvalue() == "events relay off: KAFKA_BOOTSTRAP_SERVERS is not set\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> dict[str, float]:
    """The relay's /metrics, unlabelled samples by name; empty while it is not serving yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    return {m[1]: float(m[2]) for m in re.finditer(r"^([a-z_]+) ([0-9.e+-]+)$", text, re.M) if m}


@pytest.mark.django_db(transaction=True)
def test_the_relay_command_serves_its_published_count_and_the_backlog_on_its_metrics_port(
    kafka_topic: str,
) -> None:
    # given an event leased to another relay (not ours to publish) and the relay command running
    # against this test database with a metrics port
    DomainEventFactory(claimed_by="elsewhere", lease_until=timezone.now() + timedelta(minutes=10))
    port = _free_port()
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "KAFKA_BOOTSTRAP_SERVERS": django_settings.KAFKA_BOOTSTRAP_SERVERS,
        "KAFKA_TOPIC": kafka_topic,
        "EVENTS_RELAY_METRICS_PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "events_relay", "--relay-id", "r-metrics"],
        cwd=django_settings.BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert _wait_for(lambda: _scrape(port).get("events_relays_live") == 1.0)
        before = _scrape(port)

        # when three events commit
        _record(SPEC[:3])

        # then its metrics port counts them published, and the backlog is the other relay's row
        assert _wait_for(lambda: _scrape(port).get("events_relay_published_total") == 3.0)
        after = _scrape(port)
    finally:
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=20)

    assert (before["events_relay_published_total"], before["events_outbox_backlog_rows"]) == (0.0, 1.0)
    assert (after["events_relay_published_total"], after["events_outbox_backlog_rows"]) == (3.0, 1.0)
    assert after["events_relay_publish_errors_total"] == 0.0
    assert exit_code == 0
    connection.close()
