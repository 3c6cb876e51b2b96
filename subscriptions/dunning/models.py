"""Dunning: the cases opened by unpaid renewal invoices, the retries we schedule, the decline rules
that stop them, and the emails sent on each step (see docs/dunning.md)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class DunningPolicy(models.Model):
    """How one plan (or every plan without its own: the default policy) chases an unpaid renewal.

    Edited in the admin; `services.dunning_policy_validate` refuses a policy that would retry
    forever, past the billing interval, or cancel before its last retry. An edit applies to the
    steps of open cases that have not happened yet.
    """

    class Access(models.TextChoices):
        FULL = "full", "Full access"
        FEATURES = "features", "Listed features only"
        NONE = "none", "No access"

    class InvoiceEnd(models.TextChoices):
        VOID = "void", "Void the invoice"
        UNCOLLECTIBLE = "uncollectible", "Mark it uncollectible"

    plan = models.OneToOneField(
        "billing.Plan",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="dunning_policy",
        help_text="Empty: the default policy, for plans without their own.",
    )
    # Set on the one policy without a plan (the database keeps it to one).
    is_default = models.BooleanField(default=False, editable=False)
    name = models.CharField(max_length=100)
    # Days after the failed renewal, e.g. [1, 3, 5, 7]; strictly increasing, finite.
    retry_offsets_days = models.JSONField(default=list)
    past_due_access = models.CharField(max_length=16, choices=Access.choices, default=Access.FULL)
    # Feature codes kept while past_due when past_due_access is "features".
    past_due_features = models.JSONField(default=list, blank=True)
    suspend_after_failed_retries = models.PositiveSmallIntegerField(
        default=3, help_text="Suspend after this many failed automatic retries (0: at once)."
    )
    cancel_after_days = models.PositiveSmallIntegerField(
        default=14, help_text="Cancel this many days after the failed renewal."
    )
    invoice_end = models.CharField(max_length=16, choices=InvoiceEnd.choices, default=InvoiceEnd.VOID)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "dunning policies"
        ordering = ["plan__code"]
        constraints = [
            # One default policy: the only row without a plan.
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="dunning_policy_one_default"
            ),
            models.CheckConstraint(
                condition=Q(is_default=True, plan__isnull=True) | Q(is_default=False, plan__isnull=False),
                name="dunning_policy_default_has_no_plan",
            ),
            models.CheckConstraint(
                condition=Q(cancel_after_days__gte=1, cancel_after_days__lte=366),
                name="dunning_policy_cancel_days_bounded",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.plan.code if self.plan is not None else 'default'})"


class DeclineRule(models.Model):
    """What a decline means for the next retry. The most specific matching rule wins: network
    advice, then advice code, then decline code; no rule: retry on schedule."""

    class Action(models.TextChoices):
        RETRY = "retry", "Retry on schedule"
        NOT_BEFORE = "not_before", "Retry no sooner than"
        NEVER = "never", "Never retry: ask for a new card"

    decline_code = models.CharField(max_length=64, blank=True, help_text="Empty: any decline code.")
    advice_code = models.CharField(max_length=64, blank=True, help_text="Empty: any advice code.")
    network_advice_code = models.CharField(max_length=16, blank=True, help_text="Empty: any.")
    action = models.CharField(max_length=16, choices=Action.choices)
    not_before_hours = models.PositiveSmallIntegerField(null=True, blank=True)
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["decline_code", "advice_code", "network_advice_code"]
        constraints = [
            models.UniqueConstraint(
                fields=["decline_code", "advice_code", "network_advice_code"], name="decline_rule_unique"
            ),
            models.CheckConstraint(
                condition=~Q(decline_code="", advice_code="", network_advice_code=""),
                name="decline_rule_matches_something",
            ),
            models.CheckConstraint(
                condition=Q(action="not_before", not_before_hours__gte=1, not_before_hours__lte=720)
                | (~Q(action="not_before") & Q(not_before_hours__isnull=True)),
                name="decline_rule_not_before_hours",
            ),
        ]

    def __str__(self) -> str:
        codes = "/".join(c for c in (self.decline_code, self.advice_code, self.network_advice_code) if c)
        return f"{codes}: {self.get_action_display()}"


OPEN_STAGES = ("past_due", "suspended")


class DunningCase(models.Model):
    """One unpaid renewal invoice being chased: opened by invoice.payment_failed, closed by a
    payment (recovered), by cancelling the subscription, or by the customer or staff (stopped)."""

    class Stage(models.TextChoices):
        PAST_DUE = "past_due", "Past due"
        SUSPENDED = "suspended", "Suspended"
        CANCELLED = "cancelled", "Cancelled"
        RECOVERED = "recovered", "Recovered"
        STOPPED = "stopped", "Stopped"

    subscription = models.ForeignKey(
        "subscriptions.Subscription", on_delete=models.CASCADE, related_name="dunning_cases"
    )
    policy = models.ForeignKey(DunningPolicy, on_delete=models.PROTECT, related_name="cases")
    stripe_invoice_id = models.CharField(max_length=255, unique=True)
    stripe_customer_id = models.CharField(max_length=255, blank=True, db_index=True)
    amount_due = models.PositiveBigIntegerField(help_text="Minor units.")
    currency = models.CharField(max_length=3)
    stage = models.CharField(max_length=16, choices=Stage.choices, default=Stage.PAST_DUE)
    opened_at = models.DateTimeField(help_text="When the renewal failed: day 0 of the schedule.")
    failed_retries = models.PositiveSmallIntegerField(default=0)
    needs_new_card = models.BooleanField(default=False)
    paused = models.BooleanField(default=False)
    grace_days = models.PositiveSmallIntegerField(default=0, help_text="Added by staff to the cancel day.")
    # When the cancel step is due: opened_at + the policy's cancel day + grace (kept by the services).
    cancel_at = models.DateTimeField()
    stripe_payment_method_id = models.CharField(max_length=255, blank=True)
    last_decline_code = models.CharField(max_length=64, blank=True)
    last_advice_code = models.CharField(max_length=64, blank=True)
    last_network_advice_code = models.CharField(max_length=16, blank=True)
    # The cancel step calls Stripe; set while one process does it (expires if that process dies).
    cancel_claimed_until = models.DateTimeField(null=True, blank=True)
    # The failed renewal's event carried no card codes: they are read from Stripe (its payment
    # intent's last_payment_error) before any retry runs. When the sweep next asks; null: known.
    decline_lookup_due_at = models.DateTimeField(null=True, blank=True)
    # A void (or mark uncollectible) Stripe has not confirmed yet: when the sweep next asks, under
    # the same idempotency key, until Stripe says the invoice is void, uncollectible or paid.
    invoice_end_due_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    close_reason = models.CharField(max_length=200, blank=True)
    recovered_amount = models.PositiveBigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-opened_at", "-pk"]
        indexes = [
            models.Index(fields=["stage", "opened_at"], name="dunning_case_stage_opened"),
            models.Index(
                fields=["cancel_at"], condition=Q(stage__in=OPEN_STAGES), name="dunning_case_cancel_due"
            ),
            models.Index(
                fields=["decline_lookup_due_at"],
                condition=Q(decline_lookup_due_at__isnull=False),
                name="dunning_case_lookup_due",
            ),
            models.Index(
                fields=["invoice_end_due_at"],
                condition=Q(invoice_end_due_at__isnull=False),
                name="dunning_case_invoice_end_due",
            ),
        ]

    def __str__(self) -> str:
        return f"dunning of {self.stripe_invoice_id} ({self.stage})"

    @property
    def is_open(self) -> bool:
        return self.stage in OPEN_STAGES


class DunningAttempt(models.Model):
    """One retry of the case's invoice, scheduled ahead; claimed by the sweep, run by one task."""

    class Kind(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled retry"
        NEW_CARD = "new_card", "New card (customer)"
        STAFF = "staff", "Retry now (staff)"

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        CLAIMED = "claimed", "Claimed (queued)"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"
        CANCELLED = "cancelled", "Cancelled"

    case = models.ForeignKey(DunningCase, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.SCHEDULED)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCHEDULED)
    due_at = models.DateTimeField()
    # Stripe sees one request per (invoice, attempt): a resent request is replayed, never charged twice.
    idempotency_key = models.CharField(max_length=255, unique=True)
    stripe_payment_method_id = models.CharField(max_length=255, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    decline_code = models.CharField(max_length=64, blank=True)
    advice_code = models.CharField(max_length=64, blank=True)
    network_advice_code = models.CharField(max_length=16, blank=True)
    outcome = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["due_at", "number"]
        constraints = [models.UniqueConstraint(fields=["case", "number"], name="dunning_attempt_number")]
        indexes = [
            models.Index(fields=["due_at"], condition=Q(status="scheduled"), name="dunning_attempt_due"),
            models.Index(
                fields=["stripe_payment_method_id", "finished_at"], name="dunning_attempt_card_recent"
            ),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.case.stripe_invoice_id} ({self.status})"


class DunningEmail(models.Model):
    """One email per (case, step): the unique constraint makes a retried step send nothing more."""

    class Step(models.TextChoices):
        PAYMENT_FAILED = "payment_failed", "Payment failed"
        RETRY_FAILED = "retry_failed", "Retry failed"
        SUSPENDED = "suspended", "Suspended"
        CANCELLED = "cancelled", "Cancelled"
        RECOVERED = "recovered", "Recovered"

    case = models.ForeignKey(DunningCase, on_delete=models.CASCADE, related_name="emails")
    # The step, and for retries which one ("retry_failed:2").
    step = models.CharField(max_length=40)
    to = models.EmailField()
    subject = models.CharField(max_length=200)
    sending_until = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [models.UniqueConstraint(fields=["case", "step"], name="dunning_email_once_per_step")]

    def __str__(self) -> str:
        return f"{self.step} to {self.to}"
