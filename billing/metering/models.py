"""Meter reports (one Stripe meter event per customer, meter and closed window), the Stripe meters
we know, and reconciliations of our totals against Stripe's meter event summaries."""

from __future__ import annotations

from django.db import models
from django.db.models import F, Q

# Stripe's limit for meter event names and identifiers.
EVENT_NAME_MAX_LENGTH = 100


class StripeMeter(models.Model):
    """The Stripe meter that sums one event name (Stripe allows one active meter per name)."""

    event_name = models.CharField(max_length=EVENT_NAME_MAX_LENGTH, unique=True)
    stripe_meter_id = models.CharField(max_length=255, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["event_name"]

    def __str__(self) -> str:
        return f"{self.event_name} ({self.stripe_meter_id})"


class MeterReport(models.Model):
    """What we report to Stripe for one customer, meter event name and closed window.

    The `identifier` is Stripe's dedupe key for the meter event; it is fixed when the row is
    created, before any send, so every send of this row (a retry, a rerun after a crash between
    Stripe's answer and our mark) names the same event and Stripe bills it once.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending (to send)"
        SENT = "sent", "Sent (Stripe has it)"
        REFUSED = "refused", "Refused by Stripe (not retried)"

    stripe_customer_id = models.CharField(max_length=255)
    event_name = models.CharField(max_length=EVENT_NAME_MAX_LENGTH)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    value = models.PositiveBigIntegerField()
    subscription_stripe_id = models.CharField(max_length=255, blank=True)
    identifier = models.CharField(max_length=EVENT_NAME_MAX_LENGTH, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    already_existed = models.BooleanField(
        default=False, help_text="Stripe answered that it already held this identifier (an earlier send)."
    )
    last_error = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-window_start", "stripe_customer_id", "event_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["stripe_customer_id", "event_name", "window_start"], name="meterreport_one_per_window"
            ),
            models.CheckConstraint(
                name="meterreport_window_ordered", condition=Q(window_end__gt=F("window_start"))
            ),
        ]
        indexes = [models.Index(fields=["status", "window_end"], name="meterreport_status")]
        permissions = [("send_meterreport", "Can send meter reports to Stripe now")]

    def __str__(self) -> str:
        return (
            f"{self.event_name} {self.stripe_customer_id} {self.window_start:%Y-%m-%d %H:%M} = {self.value}"
        )


class MeterReconciliation(models.Model):
    """One comparison of our totals with Stripe's meter event summaries over [start, end)."""

    start = models.DateTimeField()
    end = models.DateTimeField()
    lines_count = models.PositiveIntegerField(default=0)
    differences = models.PositiveIntegerField(default=0, help_text="Lines where Stripe and we differ.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d} to {self.end:%Y-%m-%d}: {self.differences} differences"


class MeterReconciliationLine(models.Model):
    """Our total and Stripe's for one customer and meter event name in a reconciliation."""

    reconciliation = models.ForeignKey(MeterReconciliation, on_delete=models.CASCADE, related_name="lines")
    stripe_customer_id = models.CharField(max_length=255)
    event_name = models.CharField(max_length=EVENT_NAME_MAX_LENGTH)
    ours = models.BigIntegerField()
    stripe = models.BigIntegerField(
        null=True, blank=True, help_text="Empty: Stripe has no meter by this name."
    )
    difference = models.BigIntegerField(help_text="Stripe's total minus ours.")

    class Meta:
        ordering = ["reconciliation", "event_name", "stripe_customer_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["reconciliation", "stripe_customer_id", "event_name"], name="meterreconline_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_name} {self.stripe_customer_id}: {self.difference:+d}"
