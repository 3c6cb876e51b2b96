"""Subscriptions mirror what Stripe says; every status change leaves a history row."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from subscriptions.dunning.models import DeclineRule, DunningAttempt, DunningCase, DunningEmail, DunningPolicy
from subscriptions.families.models import Family, FamilyInvitation, FamilyMember

__all__ = [
    "LIVE_STATUSES",
    "DeclineRule",
    "DunningAttempt",
    "DunningCase",
    "DunningEmail",
    "DunningPolicy",
    "Family",
    "FamilyInvitation",
    "FamilyMember",
    "Subscription",
    "SubscriptionHistory",
]

# A subscription in one of these is still the customer's (transitions.BLOCKS_NEW_CHECKOUT, the same
# set): at most one per user and one per family, enforced by the database (Subscription.Meta).
LIVE_STATUSES = ("trialing", "active", "past_due", "unpaid", "paused", "suspended")


class Subscription(models.Model):
    class Status(models.TextChoices):
        INCOMPLETE = "incomplete", "Incomplete"
        INCOMPLETE_EXPIRED = "incomplete_expired", "Incomplete, expired"
        TRIALING = "trialing", "Trialing"
        ACTIVE = "active", "Active"
        PAST_DUE = "past_due", "Past due"
        UNPAID = "unpaid", "Unpaid"
        PAUSED = "paused", "Paused"
        SUSPENDED = "suspended", "Suspended"
        CANCELLED = "cancelled", "Cancelled"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="subscriptions")
    family = models.ForeignKey(
        "subscriptions.Family", null=True, blank=True, on_delete=models.SET_NULL, related_name="subscriptions"
    )
    plan = models.ForeignKey("billing.Plan", on_delete=models.PROTECT, related_name="subscriptions")
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.INCOMPLETE)
    current_period_start = models.DateTimeField(null=True, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True)
    trial_end = models.DateTimeField(null=True, blank=True)
    cancel_at_period_end = models.BooleanField(default=False)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    stripe_subscription_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    # Price locked at signup: what the customer agreed to pay, in the zone they signed up in.
    currency = models.CharField(max_length=3, blank=True)
    amount = models.PositiveBigIntegerField(null=True, blank=True, help_text="Minor units.")
    pricing_zone = models.ForeignKey(
        "billing.PricingZone", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Stripe's own timestamp of the newest state applied: older deliveries never move us back.
    stripe_state_at = models.DateTimeField(null=True, blank=True)
    # The period end receivers were last told about (activated/renewed): a period that moves
    # forward is announced once, whichever delivery (invoice or subscription event) brings it.
    announced_period_end = models.DateTimeField(null=True, blank=True, editable=False)
    # Stripe completed this subscription while the customer (or their family) already had a live
    # one, kept instead: this one was cancelled at once. Settled once cancelled at Stripe too and
    # whatever it charged refunded (services.subscription_duplicate_settle).
    duplicate_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    duplicate_settled_at = models.DateTimeField(null=True, blank=True, editable=False)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["user", "status"], name="subscription_user_status")]
        constraints = [
            # Two checkouts paid for one customer must not both run: the second to go live breaks
            # these and is cancelled instead (services._safe_transition), whatever the timing.
            models.UniqueConstraint(
                fields=["user"],
                condition=Q(status__in=LIVE_STATUSES),
                name="subscription_one_live_per_user",
            ),
            models.UniqueConstraint(
                fields=["family"],
                condition=Q(status__in=LIVE_STATUSES, family__isnull=False),
                name="subscription_one_live_per_family",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.plan.code} for {self.user} ({self.status})"


class SubscriptionHistory(models.Model):
    """One row per status change: from, to, and what caused it (the admin's timeline)."""

    class Cause(models.TextChoices):
        WEBHOOK = "webhook", "Stripe webhook"
        STAFF = "staff", "Staff"
        DUNNING = "dunning", "Dunning"
        SCHEDULE = "schedule", "Schedule"
        API = "api", "Customer via API"

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="history")
    from_status = models.CharField(max_length=24, blank=True)
    to_status = models.CharField(max_length=24)
    cause = models.CharField(max_length=16, choices=Cause.choices)
    stripe_event_id = models.CharField(max_length=255, blank=True)
    staff_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]
        verbose_name_plural = "subscription history"

    def __str__(self) -> str:
        return f"{self.from_status or '-'} -> {self.to_status}"


class SubscriptionStripeCall(models.Model):
    """A change we ask Stripe for, recorded before the call and applied to our row after its answer.

    Stripe is never called with a transaction open: the intent is written in one short
    transaction, Stripe is called, and its answer is applied in a second one. A process that dies
    in between leaves the intent pending; the sweep sends it again with the same idempotency key
    (so Stripe does it once) and applies it.
    """

    class Action(models.TextChoices):
        CANCEL_NOW = "cancel_now", "Cancel immediately"
        CANCEL_AT_PERIOD_END = "cancel_at_period_end", "Cancel at period end"
        RESUME = "resume", "Resume"
        CHANGE_PLAN = "change_plan", "Change plan"
        EXTEND_PERIOD = "extend_period", "Extend period"
        SYNC_METERED_ITEMS = "sync_metered_items", "Sync metered items with the plan"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPLIED = "applied", "Applied"
        FAILED = "failed", "Failed (refused by Stripe, or given up)"

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="stripe_calls")
    action = models.CharField(max_length=24, choices=Action.choices)
    # Sent verbatim on every attempt: a resend under the same key must carry the same body.
    stripe_params = models.JSONField(default=dict, blank=True)
    # What our row becomes once Stripe has agreed (plan, amount, new period end, note).
    params = models.JSONField(default=dict, blank=True)
    idempotency_key = models.CharField(max_length=255, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # Who asked, for the history row written when the change is applied.
    cause = models.CharField(max_length=16, choices=SubscriptionHistory.Cause.choices)
    staff_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    attempts = models.PositiveIntegerField(default=0)
    # Set while one process is sending it; nobody else sends it before then (a dead sender's
    # claim simply expires).
    in_flight_until = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            # Stripe gets one change of a subscription at a time: a second one would race the
            # first there, and our row could end up applying them in the other order.
            models.UniqueConstraint(
                fields=["subscription"],
                condition=models.Q(status="pending"),
                name="subscription_one_pending_stripe_call",
            )
        ]
        indexes = [models.Index(fields=["status", "updated_at"], name="subscription_stripe_call_sweep")]

    def __str__(self) -> str:
        return f"{self.action} of subscription {self.subscription_id} ({self.status})"
