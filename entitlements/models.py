"""Who may use which feature: entitlements held by a user or by a family."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Entitlement(models.Model):
    """The right to use one feature, held by a user or a family, from a subscription or a purchase."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        REVOKED = "revoked", "Revoked"

    class Source(models.TextChoices):
        SUBSCRIPTION = "subscription", "Subscription"
        ONE_TIME = "one_time", "One-time purchase"
        MANUAL = "manual", "Granted by staff"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="entitlements"
    )
    family = models.ForeignKey(
        "subscriptions.Family", null=True, blank=True, on_delete=models.CASCADE, related_name="entitlements"
    )
    feature = models.ForeignKey("billing.Feature", on_delete=models.PROTECT, related_name="entitlements")
    plan = models.ForeignKey(
        "billing.Plan", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    subscription = models.ForeignKey(
        "subscriptions.Subscription",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="entitlements",
    )
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.SUBSCRIPTION)
    # For one-time purchases: the Stripe payment that granted it (refunds revoke by this key).
    source_ref = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    limit = models.BigIntegerField(
        null=True, blank=True, help_text="Copied from the plan; empty = unlimited."
    )
    reset_period = models.CharField(max_length=16, blank=True, default="never")
    granted_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # Exactly one holder: a user or a family.
            models.CheckConstraint(
                name="entitlement_one_holder",
                condition=Q(user__isnull=False, family__isnull=True)
                | Q(user__isnull=True, family__isnull=False),
            ),
            # Granting twice for the same subscription leaves one row (idempotent receivers).
            models.UniqueConstraint(
                fields=["subscription", "feature"],
                condition=Q(subscription__isnull=False),
                name="entitlement_one_per_subscription_feature",
            ),
            models.UniqueConstraint(
                fields=["source_ref", "feature"],
                condition=Q(source="one_time"),
                name="entitlement_one_per_purchase_feature",
            ),
        ]
        indexes = [
            models.Index(fields=["user", "status"], name="entitlement_user_status"),
            models.Index(fields=["family", "status"], name="entitlement_family_status"),
        ]

    def __str__(self) -> str:
        holder = f"user {self.user_id}" if self.user_id else f"family {self.family_id}"
        return f"{self.feature_id} for {holder} ({self.status})"


class SnapshotInvalidation(models.Model):
    """A user's cached entitlement snapshot that must be dropped from Redis.

    Written in the transaction of the change that makes the snapshot wrong, so it exists exactly
    when that change committed; deleted once Redis confirmed the drop (after commit, by the writer,
    or by the beat job entitlements.tasks.snapshot_invalidations_retry_task, which re-applies what
    is left every ENTITLEMENTS_INVALIDATION_RETRY_SECONDS). Without it an invalidation sent while
    Redis was unreachable was lost, and the old snapshot came back with Redis.
    """

    # Not a foreign key: the insert then takes no lock on the user's row, and a deleted user's
    # leftover rows only cost a harmless drop of a snapshot that no longer exists.
    user_id = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"drop the snapshot of user {self.user_id}"
