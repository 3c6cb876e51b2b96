from __future__ import annotations

import factory
from django.utils import timezone

from payments_project.events.ids import uuid7
from payments_project.events.models import AggregateSequence, DomainEvent, RelayHeartbeat
from payments_project.events.registry import EventType, integer, string

# A type for these tests only: built, not declared, so it never enters the catalog.
TEST_EVENT = EventType(
    name="test.recorded",
    version=1,
    aggregate="thing",
    description="A test event.",
    properties={"n": integer("A number."), "note": string("A note.", max_length=20)},
)


class DomainEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DomainEvent

    id = factory.LazyFunction(uuid7)
    type = TEST_EVENT.name
    schema_version = 1
    aggregate_type = TEST_EVENT.aggregate
    aggregate_id = factory.Sequence(lambda n: f"thing-{n}")
    sequence = 1
    occurred_at = factory.LazyFunction(timezone.now)
    actor_type = DomainEvent.ActorType.SYSTEM
    actor_id = ""
    payload = factory.Sequence(lambda n: {"n": n, "note": "made by a factory"})


class AggregateSequenceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AggregateSequence

    aggregate_type = TEST_EVENT.aggregate
    aggregate_id = factory.Sequence(lambda n: f"thing-{n}")
    last_sequence = 1


class RelayHeartbeatFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RelayHeartbeat

    relay_id = factory.Sequence(lambda n: f"relay-{n}")
    state = RelayHeartbeat.State.IDLE
    started_at = factory.LazyFunction(timezone.now)
    seen_at = factory.LazyFunction(timezone.now)
