"""One-time payments and the Stripe customer behind a user."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from djstripe.models import Customer

from billing.catalog.selectors import plan_list, plan_quote, zone_for_country
from billing.catalog.services import customer_pricing_fix
from billing.events import PAYMENT_FAILED, PAYMENT_SUCCEEDED, payment_failed_payload, payment_payload
from billing.models import Payment, PaymentStatusChange, Plan
from billing.money import MAX_AMOUNT_MINOR, currency_exponent, is_stripe_currency
from billing.payments import metrics
from billing.payments.signals import payment_succeeded
from billing.stripe import gateway as stripe_gateway
from payments_project.accounts.services import audit_record
from payments_project.errors import Conflict, DomainError, NotFound
from payments_project.events.services import Actor, event_record
from payments_project.ids import int_id

logger = logging.getLogger(__name__)

# Stripe's own statuses of a PaymentIntent, as we store them.
_INTENT_STATUS = {
    "requires_payment_method": Payment.Status.REQUIRES_PAYMENT_METHOD,
    "requires_confirmation": Payment.Status.REQUIRES_CONFIRMATION,
    "requires_action": Payment.Status.REQUIRES_ACTION,
    "processing": Payment.Status.PROCESSING,
    "requires_capture": Payment.Status.PROCESSING,
    "succeeded": Payment.Status.SUCCEEDED,
    "canceled": Payment.Status.CANCELED,
}
# A final status never moves back, whatever order Stripe's events arrive in.
FINAL = {Payment.Status.SUCCEEDED, Payment.Status.CANCELED}


def money_validate(*, amount: int, currency: str) -> str:
    """Refuse what Stripe would refuse, before calling it; returns the ISO code in capitals."""
    code = currency.upper()
    if not is_stripe_currency(code):
        raise DomainError(
            f"Unknown currency {currency!r}.",
            code="validation_error",
            fields={
                "currency": [{"code": "invalid", "message": "An ISO 4217 code Stripe charges in, e.g. USD."}]
            },
        )
    if not 0 < amount <= MAX_AMOUNT_MINOR:
        raise DomainError(
            f"The amount must be from 1 to {MAX_AMOUNT_MINOR} minor units.",
            code="validation_error",
            fields={
                "amount": [{"code": "min_value", "message": f"Minor units, from 1 to {MAX_AMOUNT_MINOR}."}]
            },
        )
    # Stripe charges three-decimal currencies (KWD, BHD, ...) in multiples of 10 minor units.
    if currency_exponent(code) == 3 and amount % 10:
        raise DomainError(
            f"{code} amounts must be a multiple of 10 minor units.",
            code="validation_error",
            fields={"amount": [{"code": "invalid_precision", "message": "Must end in 0 for this currency."}]},
        )
    return code


def customer_ensure(*, user: Any) -> str:
    """The Stripe customer of `user`, created once and mirrored in dj-stripe's Customer table."""
    existing = (
        Customer.objects.filter(subscriber=user, livemode=settings.STRIPE_LIVE_MODE)
        .values_list("id", flat=True)
        .first()
    )
    if existing:
        return str(existing)
    created = stripe_gateway.call(
        stripe_gateway.client().v1.customers.create,
        {"email": user.email or None, "metadata": {"user_id": str(user.pk)}},
        {"idempotency_key": f"customer:{user.pk}"},
    )
    with transaction.atomic():
        customer, _ = Customer.objects.get_or_create(
            id=created.id,
            defaults={"livemode": settings.STRIPE_LIVE_MODE, "subscriber": user, "email": user.email},
        )
        if customer.subscriber_id != user.pk:
            Customer.objects.filter(pk=customer.pk).update(subscriber=user)
    return str(created.id)


def _intent_status(intent: Any) -> str:
    status = _INTENT_STATUS.get(intent.status, Payment.Status.PROCESSING)
    if status == Payment.Status.REQUIRES_PAYMENT_METHOD and getattr(intent, "last_payment_error", None):
        return Payment.Status.FAILED
    return status


# A row without its PaymentIntent this long after its creation belongs to a request that died
# between our insert and Stripe's answer: a retry may then take it over (same Stripe key).
IN_FLIGHT = timedelta(seconds=30)


def plan_price_check(*, plan: Plan, amount: int, currency: str, country: str | None) -> None:
    """A one-time plan is sold at its catalog price in the buyer's zone, never at the caller's."""
    zone = zone_for_country(country=country)
    listed = plan_list(zone=zone).filter(pk=plan.pk).first()
    quote = plan_quote(plan=listed, zone=zone) if listed is not None else None
    if quote is None:
        raise DomainError(f"Plan {plan.code!r} is not sold in this zone.", code="not_for_sale")
    if (quote.amount, quote.currency) != (amount, currency):
        raise DomainError(
            f"Plan {plan.code!r} costs {quote.display} here.",
            code="price_mismatch",
            fields={"amount": [{"code": "price_mismatch", "message": f"{quote.amount} {quote.currency}"}]},
        )


def payment_create(
    *,
    user: Any,
    amount: int,
    currency: str,
    description: str = "",
    order_id: str = "",
    metadata: Mapping[str, str] | None = None,
    payment_method: str | None = None,
    idempotency_key: str | None = None,
    plan: Plan | None = None,
    country: str | None = None,
) -> Payment:
    """Create a PaymentIntent (and confirm it when a payment method is given).

    A retry with the same Idempotency-Key (or order id) returns the same payment and never
    charges twice: our row is unique per (user, key), and Stripe's calls carry keys derived from
    that key with the same parameters, so a retry after a lost answer gets the same PaymentIntent.
    A request whose first call Stripe refused, or never answered, leaves no row behind.
    """
    started = time.perf_counter()
    code = money_validate(amount=amount, currency=currency)
    if plan is not None:
        # `country` is the trusted proxy's; the customer's first purchase fixed theirs for good.
        priced_for = customer_pricing_fix(user=user, country=country).country or None
        plan_price_check(plan=plan, amount=amount, currency=code, country=priced_for)
    key = idempotency_key or (f"order:{order_id}" if order_id else f"auto:{uuid.uuid4().hex}")
    wanted = {"amount": amount, "currency": code, "description": description, "order_id": order_id}
    try:
        with transaction.atomic():
            payment, created = Payment.objects.get_or_create(
                user=user,
                idempotency_key=key,
                defaults={**wanted, "metadata": dict(metadata or {}), "plan": plan},
            )
    except IntegrityError:  # a concurrent request with the same key won the insert
        payment, created = Payment.objects.get(user=user, idempotency_key=key), False
    if not created:
        if {k: getattr(payment, k) for k in wanted} != wanted:
            raise Conflict(
                "This Idempotency-Key was used for a different payment.", code="idempotency_key_reused"
            )
        if not payment.stripe_payment_intent_id and payment.created_at > timezone.now() - IN_FLIGHT:
            raise Conflict(
                "A request with this Idempotency-Key is in progress; retry in a moment.",
                code="in_progress",
                headers={"Retry-After": "2"},
            )
    stripe_key = f"payment:{user.pk}:{key}"
    if not payment.stripe_payment_intent_id:
        metrics.payment_total.labels(currency=code).inc()
        try:
            _intent_create(user=user, payment=payment, stripe_key=stripe_key, payment_method=payment_method)
        except DomainError:
            if created:  # only the request that inserted the row may take it back
                Payment.objects.filter(pk=payment.pk, stripe_payment_intent_id__isnull=True).delete()
            metrics.payment_failed_total.labels(currency=code, code="create_failed").inc()
            raise
        payment.refresh_from_db()
    elif not (payment_method and payment.status == Payment.Status.REQUIRES_CONFIRMATION):
        if payment.status == Payment.Status.FAILED and payment.failure_code:
            # A replay of a declined payment answers as the first call did: 402 with its decline code.
            raise stripe_gateway.PaymentDeclined(
                payment.failure_message or "Your card was declined.",
                code="card_declined",
                extra={"decline_code": payment.failure_code},
            )
        return payment  # a replay: the first answer stands
    if payment_method and payment.status in (Payment.Status.REQUIRES_CONFIRMATION, Payment.Status.PENDING):
        # Also reached by a retry whose first attempt created the intent but lost the confirm.
        _intent_confirm(payment=payment, stripe_key=stripe_key)
    payment.refresh_from_db()
    metrics.payment_duration_seconds.observe(time.perf_counter() - started)
    return payment


def _intent_create(*, user: Any, payment: Payment, stripe_key: str, payment_method: str | None) -> None:
    customer_id = customer_ensure(user=user)
    # Only values that a retry reproduces exactly: Stripe refuses a reused key with other params.
    params: dict[str, Any] = {
        "amount": payment.amount,
        "currency": payment.currency.lower(),
        "customer": customer_id,
        "metadata": {
            **payment.metadata,
            "user_id": str(user.pk),
            "order_id": payment.order_id,
            "idempotency_key": payment.idempotency_key[:500],
            **({"plan_code": payment.plan.code} if payment.plan else {}),
        },
    }
    if payment.description:
        params["description"] = payment.description
    if payment_method:
        params["payment_method"] = payment_method
    intent = stripe_gateway.call(
        stripe_gateway.client().v1.payment_intents.create, params, {"idempotency_key": stripe_key}
    )
    Payment.objects.filter(pk=payment.pk).update(
        stripe_payment_intent_id=intent.id,
        stripe_customer_id=customer_id,
        client_secret=intent.client_secret or "",
        status=_intent_status(intent),
    )


def _intent_confirm(*, payment: Payment, stripe_key: str) -> None:
    try:
        intent = stripe_gateway.call(
            stripe_gateway.client().v1.payment_intents.confirm,
            payment.stripe_payment_intent_id,
            {},
            {"idempotency_key": f"{stripe_key}:confirm"},
        )
    except stripe_gateway.PaymentDeclined as exc:
        decline = str(exc.extra.get("decline_code", "card_declined"))
        with transaction.atomic():
            failed = (
                Payment.objects.filter(pk=payment.pk)
                .exclude(status__in=FINAL)
                .update(status=Payment.Status.FAILED, failure_code=decline, failure_message=exc.message)
            )
            if failed:
                _record_payment_event(payment_id=payment.pk, actor=Actor.of_user(payment.user))
        metrics.payment_failed_total.labels(currency=payment.currency, code=decline).inc()
        raise
    payment_apply_intent_status(
        payment_id=payment.pk, status=_intent_status(intent), actor=Actor.of_user(payment.user)
    )


def _record_payment_event(*, payment_id: int, actor: Actor | None) -> Payment:
    """payment.succeeded or payment.failed for the payment's new status, in the caller's transaction."""
    payment = Payment.objects.select_related("user", "plan").get(pk=payment_id)
    if payment.status == Payment.Status.FAILED:
        event_record(
            event_type=PAYMENT_FAILED,
            aggregate_id=payment.pk,
            payload=payment_failed_payload(payment),
            actor=actor,
        )
    elif payment.status == Payment.Status.SUCCEEDED:
        event_record(
            event_type=PAYMENT_SUCCEEDED,
            aggregate_id=payment.pk,
            payload=payment_payload(payment),
            actor=actor,
        )
    return payment


def payment_apply_intent_status(
    *,
    payment_id: int,
    status: str,
    failure_code: str = "",
    failure_message: str = "",
    actor: Actor | None = None,
) -> bool:
    """Move a payment to `status` unless it is already final; on success, tell the other apps.

    Returns whether anything changed (a duplicate or stale event changes nothing).
    """
    with transaction.atomic():
        changed = (
            Payment.objects.filter(pk=payment_id)
            .exclude(status__in=FINAL)
            .exclude(status=status)
            .update(
                status=status,
                failure_code=failure_code,
                failure_message=failure_message,
                updated_at=timezone.now(),
            )
        )
        if changed and status in (Payment.Status.SUCCEEDED, Payment.Status.FAILED):
            payment = _record_payment_event(payment_id=payment_id, actor=actor)
        if changed and status == Payment.Status.SUCCEEDED:
            metrics.payment_success_total.labels(currency=payment.currency).inc()
            metrics.payment_amount.labels(currency=payment.currency).inc(payment.amount)
            payment_succeeded.send(sender=Payment, payment=payment)
        if changed and status == Payment.Status.FAILED:
            currency = Payment.objects.values_list("currency", flat=True).get(pk=payment_id)
            metrics.payment_failed_total.labels(currency=currency, code=failure_code or "failed").inc()
    return bool(changed)


def payment_sync_from_intent(*, intent: Mapping[str, Any]) -> Payment | None:
    """Apply a PaymentIntent (as Stripe shows it now) to our row, if it is one of ours."""
    payment = Payment.objects.filter(stripe_payment_intent_id=intent.get("id")).first()
    if payment is None:
        return None
    error = intent.get("last_payment_error") or {}
    status = _INTENT_STATUS.get(str(intent.get("status")), Payment.Status.PROCESSING)
    if status == Payment.Status.REQUIRES_PAYMENT_METHOD and error:
        status = Payment.Status.FAILED
    payment_apply_intent_status(
        payment_id=payment.pk,
        status=status,
        failure_code=str(error.get("decline_code") or error.get("code") or ""),
        failure_message=str(error.get("message") or ""),
    )
    payment.refresh_from_db()
    return payment


def payment_from_checkout(*, session: Mapping[str, Any]) -> Payment | None:
    """checkout.session.completed in payment mode: our row for the session's PaymentIntent."""
    from django.contrib.auth import get_user_model

    metadata = session.get("metadata") or {}
    intent_id = session.get("payment_intent")
    user_id = str(metadata.get("user_id") or "")
    user_pk = int_id(user_id)
    user = get_user_model().objects.filter(pk=user_pk).first() if user_pk else None
    if not intent_id or user is None:
        logger.warning("checkout session %s has no payment intent or known user", session.get("id"))
        return None
    plan = Plan.objects.filter(code=metadata.get("plan_code")).first()
    payment, _ = Payment.objects.get_or_create(
        stripe_payment_intent_id=intent_id,
        defaults={
            "user": user,
            "amount": session.get("amount_total") or 0,
            "currency": str(session.get("currency") or "").upper(),
            "idempotency_key": f"checkout:{session.get('id')}",
            "plan": plan,
            "stripe_customer_id": session.get("customer") or "",
            "metadata": {"checkout_session": str(session.get("id"))},
            "status": Payment.Status.PROCESSING,
        },
    )
    if session.get("payment_status") == "paid":
        payment_apply_intent_status(payment_id=payment.pk, status=Payment.Status.SUCCEEDED)
    payment.refresh_from_db()
    return payment


def payment_status_set(*, payment_id: int, status: str, staff_user: Any, reason: str) -> Payment:
    """Staff override of a payment's status, audited (e.g. after a manual bank reconciliation)."""
    if status not in Payment.Status.values:
        raise DomainError(f"Unknown status {status!r}.", code="validation_error")
    with transaction.atomic():
        payment = Payment.objects.select_for_update().filter(pk=payment_id).first()
        if payment is None:
            raise NotFound("No such payment.")
        if payment.status == status:
            return payment
        PaymentStatusChange.objects.create(
            payment=payment,
            from_status=payment.status,
            to_status=status,
            staff_user=staff_user,
            reason=reason,
        )
        audit_record(
            actor=staff_user,
            action="payment.status_set",
            target=payment,
            subject_user_id=payment.user_id,
            reason=reason,
            data={"from": payment.status, "to": status},
        )
        previous = payment.status
        payment.status = status
        payment.save(update_fields=["status", "updated_at"])
        logger.info(
            "payment %s status %s -> %s by staff %s: %s", payment.pk, previous, status, staff_user.pk, reason
        )
        _record_payment_event(payment_id=payment.pk, actor=Actor.of_user(staff_user))
        if status == Payment.Status.SUCCEEDED:
            payment_succeeded.send(sender=Payment, payment=payment)
    return payment
