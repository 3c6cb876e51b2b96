"""The relay in /health (degraded at worst, never down) and the outbox in /metrics."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from payments_project.events.models import RelayHeartbeat
from payments_project.events.tests.factories import DomainEventFactory, RelayHeartbeatFactory


def _events(client: Client) -> tuple[int, str, dict[str, Any]]:
    response = client.get("/health")
    return response.status_code, response.json()["status"], response.json()["components"]["events"]


@pytest.mark.django_db
def test_without_a_broker_the_relay_is_off_and_health_is_up(client: Client, settings: Any) -> None:
    settings.KAFKA_BOOTSTRAP_SERVERS = ""
    DomainEventFactory()

    status, overall, events = _events(client)

    assert (status, overall, events["status"]) == (200, "up", "up")
    assert (events["relay"], events["backlog_rows"]) == ("off (KAFKA_BOOTSTRAP_SERVERS not set)", 1)


@pytest.mark.django_db
def test_a_live_relay_with_a_fresh_backlog_is_up(client: Client, settings: Any) -> None:
    settings.KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:9"
    RelayHeartbeatFactory(state=RelayHeartbeat.State.PUBLISHING)
    DomainEventFactory()

    status, overall, events = _events(client)

    assert (status, overall, events["status"], events["relay"], events["relays"]) == (
        200,
        "up",
        "up",
        "publishing",
        1,
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("heartbeat", "event_age", "problem"),
    [
        ({"state": "idle"}, timedelta(minutes=5), "oldest unpublished event is 300 s old"),
        (None, timedelta(0), "no relay has reported recently"),
        ({"state": "broker_down"}, timedelta(0), "a relay cannot reach Kafka"),
        ({"seen_at": timezone.now() - timedelta(minutes=5)}, timedelta(0), "no relay has reported recently"),
    ],
)
def test_a_lagging_or_missing_relay_degrades_health_without_taking_it_down(
    client: Client, settings: Any, heartbeat: dict[str, Any] | None, event_age: timedelta, problem: str
) -> None:
    settings.KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:9"
    if heartbeat is not None:
        RelayHeartbeatFactory(**heartbeat)
    with time_machine.travel(timezone.now() - event_age):
        DomainEventFactory()

    status, overall, events = _events(client)

    assert (status, overall, events["status"]) == (200, "degraded", "degraded")
    assert problem in events["problems"][0]


@pytest.mark.django_db
def test_metrics_show_the_backlog(client: Client) -> None:
    DomainEventFactory()
    DomainEventFactory(published_at=timezone.now())

    text = client.get("/metrics").content.decode()

    assert "events_outbox_backlog_rows 1.0" in text
    assert "events_outbox_oldest_age_seconds" in text
    assert "events_relays_live 0.0" in text
