"""A real Kafka-protocol broker (Tansu, devtools.kafka_broker) on loopback for the relay's tests.

KAFKA_TEST_PORT picks its port (default: a free one). Each test gets a topic of its own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.kafka_broker import TansuBroker
from payments_project.events.kafka import TopicMessage, topic_read
from payments_project.events.relay import Relay, RelayConfig


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TansuBroker]:
    with TansuBroker(port=int(os.environ.get("KAFKA_TEST_PORT") or 0)) as broker:
        yield broker


@pytest.fixture
def kafka_topic(kafka_broker: TansuBroker, settings: Any) -> str:
    """A new topic (3 partitions) that the relay publishes to in this test."""
    if not kafka_broker.running:  # a test stopped it to play an outage
        kafka_broker.start()
    topic = f"events-test-{uuid.uuid4().hex[:12]}"
    kafka_broker.topic_create(topic, partitions=3)
    settings.KAFKA_BOOTSTRAP_SERVERS = kafka_broker.bootstrap_servers
    settings.KAFKA_TOPIC = topic
    return topic


def relay_config(**overrides: Any) -> RelayConfig:
    """Short timings, so that an outage or a lease plays out in seconds."""
    values: dict[str, Any] = {
        "lease_seconds": 10,
        "message_timeout_seconds": 3,
        "poll_seconds": 0.2,
        "backoff_max_seconds": 1,
        "heartbeat_seconds": 1,
    }
    values.update(overrides)
    return RelayConfig.from_settings(**values)


def make_relay(relay_id: str, **overrides: Any) -> Relay:
    return Relay(relay_id=relay_id, config=relay_config(**overrides))


def read_topic(topic: str, *, count: int, idle_timeout: float = 5.0) -> list[TopicMessage]:
    """Up to `count` messages from the start of every partition; fewer when none arrives for
    `idle_timeout` seconds."""
    return list(topic_read(topic=topic, from_beginning=True, max_messages=count, idle_timeout=idle_timeout))
