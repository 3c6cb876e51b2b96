"""confluent-kafka clients built from the settings. Built in the process that uses them (never at
import time): librdkafka's threads do not survive a fork."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition
from django.conf import settings

logger = logging.getLogger("payments_project.events.kafka")


def kafka_enabled() -> bool:
    return bool(settings.KAFKA_BOOTSTRAP_SERVERS)


def client_config() -> dict[str, Any]:
    """Bootstrap servers and the security settings, passed through to librdkafka as they are."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS,
        # librdkafka logs through ours (one JSON line each), not on stderr.
        "logger": logger,
        "log.connection.close": False,
    }
    config.update({key: value for key, value in settings.KAFKA_SECURITY.items() if value})
    return config


def producer_config(*, client_id: str, message_timeout_seconds: float) -> dict[str, Any]:
    return {
        **client_config(),
        "client.id": client_id[:255],
        # Exactly once per partition per producer session, in order, each acknowledged by every
        # in-sync replica.
        "enable.idempotence": True,
        "acks": "all",
        # Java clients' partitioner: a consumer in any language finds an aggregate's partition.
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        # Every message gets its delivery report (success or error) within this time, which is
        # shorter than the relay's lease: a lease never ends while its messages are in flight.
        "message.timeout.ms": int(message_timeout_seconds * 1000),
        "queue.buffering.max.messages": 200_000,
    }


def consumer_config(*, group_id: str) -> dict[str, Any]:
    return {
        **client_config(),
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }


@dataclass(frozen=True)
class TopicMessage:
    partition: int
    offset: int
    key: str
    headers: dict[str, str]
    value: bytes


def topic_read(
    *,
    topic: str,
    from_beginning: bool,
    idle_timeout: float | None = None,
    max_messages: int | None = None,
    stop: threading.Event | None = None,
) -> Iterator[TopicMessage]:
    """Messages of every partition of `topic` as they arrive, in each partition's order.

    Partitions are assigned directly (no consumer group to join, nothing committed): a reader for
    people and tests, not a production consumer. Ends after `max_messages`, after `idle_timeout`
    seconds without a message, or when `stop` is set.
    """
    consumer = Consumer(consumer_config(group_id=f"events-reader-{uuid.uuid4().hex[:8]}"))
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise KafkaException(found.error if found is not None else f"no topic {topic}")
        offset = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, partition, offset) for partition in sorted(found.partitions)])
        seen = 0
        last = time.monotonic()
        while not (stop is not None and stop.is_set()):
            batch = consumer.consume(num_messages=500, timeout=0.2)
            for message in batch:
                if message.error() is not None:
                    continue
                seen += 1
                last = time.monotonic()
                yield TopicMessage(
                    partition=message.partition() or 0,
                    offset=message.offset() or 0,
                    key=(message.key() or b"").decode(),
                    headers=_headers(message.headers()),
                    value=message.value() or b"",
                )
                if max_messages is not None and seen >= max_messages:
                    return
            if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                return
    finally:
        consumer.close()


def _headers(raw: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in raw or []:
        found[str(name)] = value.decode() if isinstance(value, bytes) else str(value or "")
    return found
