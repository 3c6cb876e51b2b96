"""Payments (our row per Stripe PaymentIntent: one-time payments, and the charges Stripe makes for
subscriptions), staff status overrides and refunds."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from billing.catalog.models import Plan, currency_validator
from billing.money import format_money


class Payment(models.Model):
    """Money a customer paid: a one-time payment (our row for one Stripe PaymentIntent we created),
    or a charge Stripe made for a subscription (one row per paid invoice, recorded from its event).
    Both are listed, refunded and reconciled the same way."""

    class Kind(models.TextChoices):
        ONE_TIME = "one_time", "One-time payment"
        SUBSCRIPTION = "subscription", "Subscription charge"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending (not yet at Stripe)"
        REQUIRES_PAYMENT_METHOD = "requires_payment_method", "Requires payment method"
        REQUIRES_CONFIRMATION = "requires_confirmation", "Requires confirmation"
        REQUIRES_ACTION = "requires_action", "Requires action (3-D Secure)"
        PROCESSING = "processing", "Processing"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELED = "canceled", "Canceled"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payments")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.ONE_TIME)
    amount = models.PositiveBigIntegerField(help_text="Minor units.")
    currency = models.CharField(max_length=3, validators=[currency_validator])
    amount_refunded = models.PositiveBigIntegerField(default=0)
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.PENDING)
    description = models.CharField(max_length=1000, blank=True)
    order_id = models.CharField(max_length=255, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # The caller's Idempotency-Key (or one derived from order_id): a retried request finds this row.
    idempotency_key = models.CharField(max_length=255)
    stripe_payment_intent_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    stripe_customer_id = models.CharField(max_length=255, blank=True)
    stripe_charge_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    # Subscription charges: the paid invoice (one row each) and its subscription. A plain id, not a
    # key: billing knows nothing of the subscriptions app, which depends on it.
    stripe_invoice_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    stripe_subscription_id = models.CharField(max_length=255, blank=True, db_index=True)
    client_secret = models.CharField(max_length=255, blank=True)
    failure_code = models.CharField(max_length=64, blank=True)
    failure_message = models.CharField(max_length=1000, blank=True)
    plan = models.ForeignKey(
        Plan,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="A one-time purchase of this plan's features.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["user", "idempotency_key"], name="payment_idempotency_key"),
            models.CheckConstraint(
                name="payment_refund_within_amount", condition=Q(amount_refunded__lte=models.F("amount"))
            ),
        ]
        indexes = [models.Index(fields=["user", "status", "created_at"], name="payment_user_status")]
        permissions = [
            ("refund_payment", "Can refund a payment"),
            ("set_payment_status", "Can set a payment's status by hand (audited)"),
        ]

    def __str__(self) -> str:
        return f"payment {self.pk} {self.display_amount} ({self.status})"

    @property
    def display_amount(self) -> str:
        return format_money(self.amount, self.currency)

    @property
    def refundable_amount(self) -> int:
        return self.amount - self.amount_refunded

    @property
    def refund_state(self) -> str:
        """'not refunded', 'partially refunded €7.50 of €15.00' or 'fully refunded €15.00'."""
        if not self.amount_refunded:
            return "not refunded"
        if self.amount_refunded >= self.amount:
            return f"fully refunded {self.display_amount}"
        refunded = format_money(self.amount_refunded, self.currency)
        return f"partially refunded {refunded} of {self.display_amount}"

    @property
    def display_left_to_refund(self) -> str:
        return format_money(self.refundable_amount, self.currency)


class PaymentStatusChange(models.Model):
    """Audit of a status set by staff through the API."""

    payment = models.ForeignKey(Payment, on_delete=models.CASCADE, related_name="status_changes")
    from_status = models.CharField(max_length=32)
    to_status = models.CharField(max_length=32)
    staff_user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.CharField(max_length=1000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.from_status} -> {self.to_status}"


class Refund(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        REQUIRES_ACTION = "requires_action", "Requires action"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELED = "canceled", "Canceled"

    class Reason(models.TextChoices):
        REQUESTED_BY_CUSTOMER = "requested_by_customer", "Requested by customer"
        DUPLICATE = "duplicate", "Duplicate"
        FRAUDULENT = "fraudulent", "Fraudulent"

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    amount = models.PositiveBigIntegerField(validators=[MinValueValidator(1)])
    currency = models.CharField(max_length=3, validators=[currency_validator])
    reason = models.CharField(max_length=32, choices=Reason.choices, default=Reason.REQUESTED_BY_CUSTOMER)
    note = models.CharField(max_length=1000, blank=True)
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.PENDING)
    stripe_refund_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    revoke_entitlements = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Empty when the refund was made outside (e.g. Stripe's dashboard).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [models.CheckConstraint(name="refund_positive", condition=Q(amount__gt=0))]

    def __str__(self) -> str:
        return f"refund {self.pk} {self.display_amount} ({self.status})"

    @property
    def display_amount(self) -> str:
        return format_money(self.amount, self.currency)
