"""The relay: publishes the outbox to Kafka, in order per aggregate, at least once.

One loop, one batch at a time: claim rows with a lease (a short transaction), produce them with
the idempotent producer, wait for every delivery report (no transaction open), then mark the
acknowledged rows published and free the others (a short transaction each). A relay that dies
mid-way leaves its rows leased: they are published again after the lease (at least once; the
event id in the `ce_id` header lets consumers drop the duplicate). While the broker is down the
relay backs off, probing it, and every row stays in the outbox.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from payments_project.events import metrics
from payments_project.events.envelope import CONTENT_TYPE, SPEC_VERSION, envelope_attributes, envelope_bytes
from payments_project.events.kafka import producer_config
from payments_project.events.models import RelayHeartbeat
from payments_project.events.services import (
    NOTIFY_CHANNEL,
    ClaimedEvent,
    events_claim,
    events_mark_published,
    events_prune,
    events_release,
    relay_heartbeat,
    relay_heartbeats_prune,
)

logger = logging.getLogger(__name__)
State = RelayHeartbeat.State


def default_relay_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


@dataclass(frozen=True)
class RelayConfig:
    topic: str
    batch: int
    lease_seconds: float
    poll_seconds: float
    message_timeout_seconds: float
    backoff_max_seconds: float
    heartbeat_seconds: float
    retention: timedelta
    prune_every_seconds: float = 600.0

    @classmethod
    def from_settings(cls, **overrides: Any) -> RelayConfig:
        values: dict[str, Any] = {
            "topic": settings.KAFKA_TOPIC,
            "batch": settings.EVENTS_RELAY_BATCH,
            "lease_seconds": settings.EVENTS_RELAY_LEASE_SECONDS,
            "poll_seconds": settings.EVENTS_RELAY_POLL_SECONDS,
            "message_timeout_seconds": settings.EVENTS_RELAY_MESSAGE_TIMEOUT_SECONDS,
            "backoff_max_seconds": settings.EVENTS_RELAY_BACKOFF_MAX_SECONDS,
            "heartbeat_seconds": settings.EVENTS_RELAY_HEARTBEAT_SECONDS,
            "retention": timedelta(hours=settings.EVENTS_RETENTION_HOURS),
        }
        values.update(overrides)
        if values["message_timeout_seconds"] + 5 >= values["lease_seconds"]:
            raise ValueError("the lease must outlast the message timeout by more than 5 s")
        return cls(**values)


@dataclass
class Outcome:
    acked: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    error: str = ""


class _PollWaker:
    """SQLite (or no LISTEN connection): wake up every poll interval."""

    def wait(self, timeout: float, stop: threading.Event) -> None:
        stop.wait(timeout)

    def close(self) -> None:
        pass


class _ListenWaker:
    """PostgreSQL: wake up as soon as an insert commits (the outbox trigger's NOTIFY), at the latest
    after the poll interval. Falls back to polling while its connection is broken."""

    def __init__(self) -> None:
        self._conn: Any = None

    def _connect(self) -> Any:
        if self._conn is None:
            conn = connection.get_new_connection(connection.get_connection_params())
            conn.autocommit = True
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self._conn = conn
        return self._conn

    def wait(self, timeout: float, stop: threading.Event) -> None:
        deadline = time.monotonic() + timeout
        try:
            conn = self._connect()
            while not stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                # In short slices, so a stop request is seen within half a second.
                if list(conn.notifies(timeout=min(remaining, 0.5), stop_after=1)):
                    for _ in conn.notifies(timeout=0.0):  # the rest of a burst: one wake-up is enough
                        pass
                    return
        except Exception:
            logger.warning("LISTEN connection failed; polling", exc_info=True)
            self.close()
            stop.wait(timeout)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                logger.debug("LISTEN connection close failed", exc_info=True)
            self._conn = None


class Relay:
    def __init__(self, *, relay_id: str | None = None, config: RelayConfig | None = None) -> None:
        self.relay_id = relay_id or default_relay_id()
        self.config = config or RelayConfig.from_settings()
        self.state: str = State.STARTING
        self.published = 0
        self.errors = 0
        self.last_error = ""
        self.started_at = timezone.now()
        self._producer: Producer | None = None
        self._backoff = 0.0
        self._next_heartbeat = 0.0
        self._next_prune = 0.0

    # --- the loop ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        waker: _PollWaker | _ListenWaker = (
            _ListenWaker() if connection.vendor == "postgresql" else _PollWaker()
        )
        logger.info("relay %s publishing to %s", self.relay_id, self.config.topic)
        try:
            self._warm_up()
            while not stop.is_set():
                close_old_connections()
                self._housekeeping()
                if self._backoff:
                    if stop.wait(self._backoff):
                        break
                    if not self._broker_reachable():
                        self._back_off("broker unreachable")
                        continue
                try:
                    count = self.publish_once()
                except DatabaseError:
                    logger.exception("relay %s: database error; backing off", self.relay_id)
                    close_old_connections()
                    connection.close()
                    stop.wait(min(self.config.backoff_max_seconds, 5.0))
                    continue
                if count < self.config.batch and not self._backoff:
                    # Woken by a commit (PostgreSQL) or the poll; never past a heartbeat.
                    waker.wait(min(self.config.poll_seconds, self.config.heartbeat_seconds), stop)
        finally:
            waker.close()
            self._close_producer()
            self.state = State.STOPPED
            self._heartbeat(force=True)
            connection.close()
            logger.info("relay %s stopped", self.relay_id)

    def publish_once(self) -> int:
        """One batch: claim, publish, record. Returns how many rows were claimed."""
        started = time.perf_counter()
        claimed = events_claim(
            relay_id=self.relay_id,
            limit=self.config.batch,
            lease=timedelta(seconds=self.config.lease_seconds),
        )
        if not claimed:
            if self.state != State.BROKER_DOWN:
                self._set_state(State.IDLE)
            return 0
        outcome = self._publish(claimed)
        self._record(claimed, outcome)
        metrics.relay_batch_seconds.observe(time.perf_counter() - started)
        return len(claimed)

    # --- steps ------------------------------------------------------------------------------------
    def _publish(self, claimed: list[ClaimedEvent]) -> Outcome:
        """Produce every claimed row and wait for each one's delivery report. No transaction is
        open here: the claim has committed, the marking comes after."""
        outcome = Outcome()
        try:
            producer = self._ensure_producer()
        except KafkaException as exc:
            return Outcome(failed=[event.id for event in claimed], error=str(exc))

        def report(event_id: uuid.UUID) -> Any:
            def on_delivery(err: KafkaError | None, _msg: Any) -> None:
                if err is None:
                    outcome.acked.append(event_id)
                else:
                    outcome.failed.append(event_id)
                    outcome.error = str(err)

            return on_delivery

        topic = self.config.topic
        produced: list[uuid.UUID] = []
        try:
            for event in claimed:
                value = envelope_bytes(envelope_attributes(event), event.payload_json)
                headers: list[tuple[str, str | bytes | None]] = [
                    ("ce_id", str(event.id).encode()),
                    ("ce_type", event.type.encode()),
                    ("ce_specversion", SPEC_VERSION.encode()),
                    ("content-type", CONTENT_TYPE.encode()),
                ]
                key = f"{event.aggregate_type}/{event.aggregate_id}".encode()
                while True:
                    try:
                        producer.produce(
                            topic, key=key, value=value, headers=headers, on_delivery=report(event.id)
                        )
                        break
                    except BufferError:  # the local queue is full: let deliveries drain it
                        producer.poll(0.05)
                produced.append(event.id)
            remaining = producer.flush(self.config.message_timeout_seconds + 5)
            if remaining:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "delivery reports still pending"))
        except KafkaException as exc:
            # Fatal for this producer (e.g. the broker lost our producer id): build a new one.
            logger.warning("relay %s: producer failed: %s", self.relay_id, exc)
            outcome.error = str(exc)
            self._close_producer(purge=True)
        reported = set(outcome.acked) | set(outcome.failed)
        outcome.failed.extend(event.id for event in claimed if event.id not in reported)
        return outcome

    def _record(self, claimed: list[ClaimedEvent], outcome: Outcome) -> None:
        events_mark_published(relay_id=self.relay_id, event_ids=outcome.acked)
        self.published += len(outcome.acked)
        metrics.relay_published_total.inc(len(outcome.acked))
        if outcome.acked:
            acked = set(outcome.acked)
            now = timezone.now()
            for event in claimed:
                if event.id in acked:
                    metrics.commit_to_ack_seconds.observe(max(0.0, (now - event.occurred_at).total_seconds()))
        if outcome.failed:
            events_release(relay_id=self.relay_id, event_ids=outcome.failed, error=outcome.error)
            self.errors += len(outcome.failed)
            metrics.relay_errors_total.inc(len(outcome.failed))
            self._back_off(outcome.error)
        else:
            self._backoff = 0.0
            self._set_state(State.PUBLISHING)

    def _warm_up(self) -> None:
        """Connect the producer before the first event commits. A producer built on demand holds
        its first messages ~0.5 s while it connects, gets its idempotent producer id and learns the
        topic's partitions: a stall the events committed meanwhile all wait out (the latency bench's
        whole p99). A broker down now is handled by the loop's first publish, as any outage."""
        try:
            self._ensure_producer().list_topics(self.config.topic, timeout=2.0)
        except KafkaException as exc:
            logger.info("relay %s: broker not reachable at start: %s", self.relay_id, exc)

    def _back_off(self, error: str) -> None:
        self.last_error = error[:1000]
        self._backoff = min(self.config.backoff_max_seconds, max(0.5, self._backoff * 2))
        if self.state != State.BROKER_DOWN:
            logger.warning("relay %s: broker unavailable (%s); backing off", self.relay_id, error)
        self._set_state(State.BROKER_DOWN)

    def _broker_reachable(self) -> bool:
        try:
            metadata = self._ensure_producer().list_topics(self.config.topic, timeout=2.0)
        except KafkaException as exc:
            self.last_error = str(exc)[:1000]
            return False
        topic = metadata.topics.get(self.config.topic)
        return topic is not None and topic.error is None and bool(topic.partitions)

    def _ensure_producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(
                {
                    **producer_config(
                        client_id=self.relay_id, message_timeout_seconds=self.config.message_timeout_seconds
                    ),
                    "error_cb": self._on_client_error,
                }
            )
        return self._producer

    def _on_client_error(self, error: KafkaError) -> None:
        if error.fatal():
            logger.error("relay %s: fatal producer error: %s", self.relay_id, error)
        else:
            logger.info("relay %s: producer: %s", self.relay_id, error)

    def _close_producer(self, purge: bool = False) -> None:
        if self._producer is None:
            return
        producer, self._producer = self._producer, None
        try:
            if purge:
                producer.purge()
            producer.flush(0 if purge else 5)
        except KafkaException:
            logger.debug("producer close", exc_info=True)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        self._heartbeat()
        if now >= self._next_prune:
            self._next_prune = now + self.config.prune_every_seconds
            pruned = events_prune(older_than=self.config.retention)
            relay_heartbeats_prune(older_than=timedelta(days=1))
            if pruned:
                logger.info("relay %s pruned %s published events", self.relay_id, pruned)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._heartbeat(force=True)  # /health sees a change at once

    def _heartbeat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self.config.heartbeat_seconds
        try:
            relay_heartbeat(
                relay_id=self.relay_id,
                state=self.state,
                started_at=self.started_at,
                published=self.published,
                errors=self.errors,
                last_error=self.last_error,
            )
        except DatabaseError:
            logger.warning("relay %s: heartbeat not written", self.relay_id, exc_info=True)
