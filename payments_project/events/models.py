"""The outbox: one row per domain event, written in the transaction of the change it records."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Q

from payments_project.events.ids import uuid7


class DomainEvent(models.Model):
    """One business event. Everything but the delivery columns is fixed when the row is written:
    the model refuses to save an existing row and a database trigger refuses to change those
    columns, so the payload consumers get is the one built in the transaction."""

    class ActorType(models.TextChoices):
        USER = "user", "Customer"
        STAFF = "staff", "Staff"
        SERVICE = "service", "Service account"
        STRIPE = "stripe", "Stripe event"
        SCHEDULE = "schedule", "Scheduled job"
        SYSTEM = "system", "System"

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False, help_text="UUIDv7: time-ordered.")
    type = models.CharField(max_length=100, help_text="e.g. subscription.status_changed")
    schema_version = models.PositiveSmallIntegerField()
    aggregate_type = models.CharField(max_length=64)
    aggregate_id = models.CharField(max_length=255)
    sequence = models.PositiveBigIntegerField(help_text="1, 2, 3... per aggregate, in commit order.")
    occurred_at = models.DateTimeField()
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.CharField(max_length=255, blank=True)
    payload = models.JSONField()
    # Set by services that may run twice for the same fact (e.g. a Stripe event processed again).
    dedupe_key = models.CharField(max_length=255, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # --- delivery, owned by the relay -----------------------------------------------------------
    published_at = models.DateTimeField(null=True, blank=True, help_text="When the broker acknowledged it.")
    claimed_by = models.CharField(max_length=128, blank=True, default="")
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=1000, blank=True, default="")
    publish_count = models.PositiveIntegerField(default=0, help_text="Acknowledged publications.")

    class Meta:
        ordering = ["id"]
        verbose_name = "domain event"
        permissions = [("publish_again", "Can publish events again (audited)")]
        constraints = [
            models.UniqueConstraint(
                fields=["aggregate_type", "aggregate_id", "sequence"], name="event_aggregate_sequence"
            ),
            models.UniqueConstraint(
                fields=["dedupe_key"], condition=Q(dedupe_key__isnull=False), name="event_dedupe_key"
            ),
            models.CheckConstraint(name="event_sequence_positive", condition=Q(sequence__gte=1)),
        ]
        indexes = [
            # The relay's work list: small however long the table grows, in id (time) order.
            models.Index(fields=["id"], condition=Q(published_at__isnull=True), name="event_unpublished"),
            # The claim's "no earlier unpublished row of this aggregate" check, whatever the history.
            models.Index(
                fields=["aggregate_type", "aggregate_id", "sequence"],
                condition=Q(published_at__isnull=True),
                name="event_unpublished_aggregate",
            ),
            models.Index(fields=["type", "occurred_at"], name="event_type_occurred"),
            models.Index(fields=["occurred_at"], name="event_occurred"),
        ]
        # Few indexes on purpose: a claim and a marking rewrite each row, and every index costs a
        # write per row each time (the relay's throughput is mostly this). Pruning walks the
        # primary key, whose UUIDv7 ids are in time order.

    def __str__(self) -> str:
        return f"{self.type} {self.aggregate_type}:{self.aggregate_id} #{self.sequence}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ValueError("domain events are immutable; delivery columns change through the services")
        super().save(*args, **kwargs)


class AggregateSequence(models.Model):
    """The last sequence number given to an aggregate's events. Incremented by an upsert that locks
    the row until the writer's commit, so two transactions never get the same number and numbers
    commit in order."""

    aggregate_type = models.CharField(max_length=64)
    aggregate_id = models.CharField(max_length=255)
    last_sequence = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["aggregate_type", "aggregate_id"], name="aggregate_sequence_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.aggregate_type}:{self.aggregate_id} at {self.last_sequence}"


class RelayHeartbeat(models.Model):
    """What each relay process last said about itself (for /health, metrics and the admin)."""

    class State(models.TextChoices):
        STARTING = "starting", "Starting"
        PUBLISHING = "publishing", "Publishing"
        IDLE = "idle", "Idle (nothing to publish)"
        BROKER_DOWN = "broker_down", "Broker unavailable (backing off)"
        STOPPED = "stopped", "Stopped"

    relay_id = models.CharField(max_length=128, primary_key=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.STARTING)
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField()
    published = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    last_error = models.CharField(max_length=1000, blank=True, default="")

    class Meta:
        ordering = ["-seen_at"]

    def __str__(self) -> str:
        return f"relay {self.relay_id} ({self.state})"
