"""The inbound Stripe event inbox: one row per Stripe event id."""

from __future__ import annotations

from django.db import models


class StripeEvent(models.Model):
    """One row per Stripe event id: the inbox that makes each event take effect once."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PROCESSING = "processing", "Processing"
        DONE = "done", "Done"
        FAILED = "failed", "Failed (will retry)"
        DEAD = "dead", "Failed (retries exhausted)"

    stripe_event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=128)
    # Read from the payload when it arrives, so staff find a customer's events and each event's
    # object: the object's id (cus_, sub_, in_, pi_, ch_...) and the customer it concerns.
    object_id = models.CharField(max_length=255, blank=True, db_index=True)
    stripe_customer_id = models.CharField(max_length=255, blank=True, db_index=True)
    livemode = models.BooleanField(default=False)
    stripe_created = models.DateTimeField(null=True, blank=True, help_text="When Stripe created the event.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    deliveries = models.PositiveIntegerField(default=1, help_text="How many times Stripe delivered it.")
    last_error = models.TextField(blank=True)
    trigger = models.ForeignKey(
        "djstripe.WebhookEventTrigger", null=True, on_delete=models.SET_NULL, related_name="+"
    )
    received_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-pk"]
        indexes = [models.Index(fields=["status", "received_at"], name="stripeevent_status")]

    def __str__(self) -> str:
        return f"{self.type} {self.stripe_event_id} ({self.status})"
