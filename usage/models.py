"""The usage ledger: what each user consumed, once, and the per-period counters quotas are checked on.

History is append-only: a mistake is corrected by a signed UsageAdjustment, never by editing a
UsageRecord. For every (subject, feature, period) the counter's `used` equals the sum of the records'
quantities plus the adjustments, and `reserved` the sum of the holds still open (tests check it).

A subject is the holder of the quota: a user (`u<id>`) or, for family plans, the family pool
(`f<id>`) every member draws on. It is one string column so that the counter's unique key and the
conditional UPDATE stay simple and index-friendly.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

FEATURE_CODE_MAX = 64
IDEMPOTENCY_KEY_MAX = 200
RESOURCE_FIELD_MAX = 255
SUBJECT_MAX = 32
FINGERPRINT_MAX = 64


class UsageRecord(models.Model):
    """One recorded event (the original design's usage_records row, plus quantity and dedupe key).

    `user` and `family` are not foreign keys in the database (db_constraint=False): each of a
    batch's 1,000 rows would otherwise look up and share-lock its user's row (ingest is the hot
    write path). Django still refuses to delete a user with records (PROTECT).
    """

    # No index of its own: the dedupe key's index leads with it.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    # The family whose pool it was counted on (family plans), else empty.
    family = models.ForeignKey(
        "subscriptions.Family",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    subject = models.CharField(max_length=SUBJECT_MAX, help_text="u<user id> or f<family id>.")
    feature_code = models.CharField(max_length=FEATURE_CODE_MAX)
    quantity = models.BigIntegerField()
    resource_type = models.CharField(max_length=RESOURCE_FIELD_MAX, blank=True, default="")
    resource_size = models.BigIntegerField(default=0)
    operation = models.CharField(max_length=RESOURCE_FIELD_MAX, blank=True, default="")
    idempotency_key = models.CharField(max_length=IDEMPOTENCY_KEY_MAX)
    # sha256 of the event's canonical body: the same key with another body is refused (409).
    fingerprint = models.CharField(max_length=FINGERPRINT_MAX)
    metadata = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField()
    # The counter period it was counted in (its start; the epoch for limits that never reset).
    period_start = models.DateTimeField()
    # Soft policy: recorded past the limit.
    over_limit = models.BooleanField(default=False)
    reservation = models.ForeignKey(
        "usage.UsageReservation",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
    )

    class Meta:
        constraints = [
            # The dedupe key: never the timestamp.
            models.UniqueConstraint(
                fields=["user", "feature_code", "idempotency_key"], name="usagerecord_dedupe"
            ),
            models.CheckConstraint(name="usagerecord_quantity_positive", condition=Q(quantity__gt=0)),
        ]
        # Few indexes: every one is written by each ingested row. The dedupe key's index serves a
        # user's history (its leading column); billing totals read by occurred_at. Family pools
        # and settled reservations are the few rows that have them: partial indexes skip the rest.
        indexes = [
            models.Index(fields=["occurred_at"], name="usagerecord_occurred"),
            models.Index(fields=["family"], name="usagerecord_family", condition=Q(family__isnull=False)),
            models.Index(
                fields=["reservation"],
                name="usagerecord_reservation",
                condition=Q(reservation__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} {self.feature_code} by user {self.user_id}"


class UsageCounter(models.Model):
    """One subject's consumption of one feature in one period: the row quotas are checked on."""

    subject = models.CharField(max_length=SUBJECT_MAX)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    family = models.ForeignKey(
        "subscriptions.Family", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    feature_code = models.CharField(max_length=FEATURE_CODE_MAX)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField(null=True, blank=True, help_text="Empty: never resets.")
    # The limit and policy last applied (from the subject's entitlement); empty limit: unlimited.
    limit = models.BigIntegerField(null=True, blank=True)
    # The most used + reserved could reach at the last count by events (the limit plus any overage
    # allowance; empty: nothing refused, unlimited or soft). Written with each count, by the
    # statement whose condition it is (usage.services._counters_upsert); also empty on a counter
    # only a reservation has touched so far. Shown to staff, never read to decide.
    allowance = models.BigIntegerField(null=True, blank=True)
    used = models.BigIntegerField(default=0)
    reserved = models.BigIntegerField(default=0)
    # Bumped on every change: the Redis mirror keeps the highest it saw.
    seq = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["subject", "feature_code", "period_start"], name="usagecounter_unique"
            ),
            models.CheckConstraint(name="usagecounter_reserved_not_negative", condition=Q(reserved__gte=0)),
            models.CheckConstraint(
                name="usagecounter_one_holder",
                condition=Q(user__isnull=False, family__isnull=True)
                | Q(user__isnull=True, family__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.subject} {self.feature_code} from {self.period_start:%Y-%m-%d}: {self.used}"


class UsageAdjustment(models.Model):
    """A signed correction by staff, counted in its period: history is never edited."""

    subject = models.CharField(max_length=SUBJECT_MAX)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    family = models.ForeignKey(
        "subscriptions.Family", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    feature_code = models.CharField(max_length=FEATURE_CODE_MAX)
    period_start = models.DateTimeField()
    quantity = models.BigIntegerField(help_text="Signed: negative gives units back.")
    reason = models.CharField(max_length=1000)
    staff_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(name="usageadjustment_not_zero", condition=~Q(quantity=0)),
        ]
        indexes = [
            models.Index(fields=["subject", "feature_code", "period_start"], name="usageadjustment_counter")
        ]

    def __str__(self) -> str:
        holder = f"family {self.family_id}" if self.family_id else f"user {self.user_id}"
        return f"{self.quantity:+d} {self.feature_code} for {holder}"


class UsageReservation(models.Model):
    """Units held for a long operation: counted against the quota until settled, released or expired."""

    class Status(models.TextChoices):
        HELD = "held", "Held"
        SETTLED = "settled", "Settled"
        RELEASED = "released", "Released"
        EXPIRED = "expired", "Expired"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    family = models.ForeignKey(
        "subscriptions.Family", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    subject = models.CharField(max_length=SUBJECT_MAX)
    feature_code = models.CharField(max_length=FEATURE_CODE_MAX)
    period_start = models.DateTimeField()
    quantity = models.BigIntegerField()
    settled_quantity = models.BigIntegerField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=IDEMPOTENCY_KEY_MAX)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.HELD)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "feature_code", "idempotency_key"], name="usagereservation_dedupe"
            ),
            models.CheckConstraint(name="usagereservation_quantity_positive", condition=Q(quantity__gt=0)),
        ]
        indexes = [
            models.Index(
                fields=["expires_at"], condition=Q(status="held"), name="usagereservation_held_expiry"
            )
        ]

    def __str__(self) -> str:
        return f"{self.quantity} {self.feature_code} held for user {self.user_id} ({self.status})"


class UsageThreshold(models.Model):
    """A threshold crossed once per (subject, feature, period): the unique key makes it exactly once."""

    class Level(models.TextChoices):
        WARNING = "80", "80% of the limit"
        REACHED = "100", "The limit"
        OVERAGE = "overage", "Past the limit"

    subject = models.CharField(max_length=SUBJECT_MAX)
    feature_code = models.CharField(max_length=FEATURE_CODE_MAX)
    period_start = models.DateTimeField()
    level = models.CharField(max_length=8, choices=Level.choices)
    limit = models.BigIntegerField()
    used = models.BigIntegerField()
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["subject", "feature_code", "period_start", "level"], name="usagethreshold_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.subject} {self.feature_code} {self.level}"


class UsageMeterCursor(models.Model):
    """How far metered usage has been handed to Stripe: every window ending at or before
    `reported_until` has its meter reports recorded (billing.metering). One row per stream."""

    name = models.CharField(max_length=32, unique=True)
    reported_until = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} reported until {self.reported_until:%Y-%m-%d %H:%M}"
