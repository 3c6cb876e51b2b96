"""Refunds of payments (one-time payments and subscription charges alike): made by finance staff in
the admin, or elsewhere (Stripe's dashboard) and synced."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from billing.events import PAYMENT_REFUNDED, payment_refunded_payload
from billing.models import Payment, Refund
from billing.money import format_money
from billing.payments.signals import payment_refunded
from billing.stripe import gateway as stripe_gateway
from payments_project.accounts.services import audit_record
from payments_project.errors import DomainError, NotFound
from payments_project.events.services import Actor, event_record
from payments_project.ids import int_id

logger = logging.getLogger(__name__)

_COUNTED = [Refund.Status.PENDING, Refund.Status.REQUIRES_ACTION, Refund.Status.SUCCEEDED]
_STATUS = {s.value: s for s in Refund.Status}


class RefundRefused(DomainError):
    code = "refund_refused"


def _recount(payment_id: int) -> None:
    """amount_refunded is the sum of the refunds that count: recomputed, so replays cannot drift."""
    total = Refund.objects.filter(payment_id=payment_id, status__in=_COUNTED).aggregate(s=Sum("amount"))["s"]
    Payment.objects.filter(pk=payment_id).update(amount_refunded=total or 0)


class RefundPending(DomainError):
    status_code = 503
    code = "refund_pending"


def refund_create(
    *,
    payment_id: int,
    amount: int | None,
    reason: str,
    staff_user: Any,
    note: str = "",
    revoke_entitlements: bool = False,
) -> Refund:
    """Refund all (amount=None) or part of a succeeded payment through Stripe.

    First the refund is recorded as pending, under a lock on the payment, and counts at once
    against what is left: two staff members cannot together refund more than was paid. Then it
    is sent to Stripe with an idempotency key derived from that row, so sending it again (after a
    timeout, by the beat job) can never refund twice.
    """
    if reason not in Refund.Reason.values:
        raise RefundRefused(
            f"Unknown reason {reason!r}.", fields={"reason": [{"code": "invalid", "message": reason}]}
        )
    with transaction.atomic():
        payment = Payment.objects.select_for_update().filter(pk=payment_id).first()
        if payment is None:
            raise NotFound("No such payment.")
        if payment.status != Payment.Status.SUCCEEDED or not (
            payment.stripe_payment_intent_id or payment.stripe_charge_id
        ):
            raise RefundRefused(f"Only succeeded payments can be refunded (this one is {payment.status}).")
        if revoke_entitlements and payment.kind == Payment.Kind.SUBSCRIPTION:
            raise RefundRefused(
                "A subscription's features are taken back by cancelling the subscription, not by "
                "refunding one of its charges.",
                code="revoke_not_for_subscriptions",
            )
        left = payment.refundable_amount
        amount = left if amount is None else amount
        if amount <= 0:
            raise RefundRefused("The refund amount must be positive.", code="invalid_amount")
        if amount > left:
            raise RefundRefused(
                f"Only {format_money(left, payment.currency)} is left to refund "
                f"(asked {format_money(amount, payment.currency)}).",
                code="over_refund",
            )
        refund = Refund.objects.create(
            payment=payment,
            amount=amount,
            currency=payment.currency,
            reason=reason,
            note=note,
            created_by=staff_user,
            revoke_entitlements=revoke_entitlements,
        )
        _recount(payment.pk)
        audit_record(
            actor=staff_user,
            action="refund.create",
            target=refund,
            subject_user_id=payment.user_id,
            reason=note,
            data={"payment_id": payment.pk, "amount": amount, "currency": payment.currency, "reason": reason},
        )
    logger.info("refund %s of payment %s by staff %s", refund.pk, payment_id, getattr(staff_user, "pk", None))
    return refund_submit(refund_id=refund.pk)


def refund_submit(*, refund_id: int) -> Refund:
    """Send a pending refund to Stripe; again after a timeout: same row, same key, one refund."""
    refund = Refund.objects.select_related("payment").get(pk=refund_id)
    if refund.stripe_refund_id or refund.status != Refund.Status.PENDING:
        return refund
    payment = refund.payment
    try:
        remote = stripe_gateway.call(
            stripe_gateway.client().v1.refunds.create,
            {
                # A subscription charge may come without a PaymentIntent (older invoices): its charge.
                **(
                    {"payment_intent": payment.stripe_payment_intent_id}
                    if payment.stripe_payment_intent_id
                    else {"charge": payment.stripe_charge_id}
                ),
                "amount": refund.amount,
                "reason": refund.reason,
                "metadata": {"refund_id": str(refund.pk), "payment_id": str(payment.pk)},
            },
            {"idempotency_key": f"refund:{refund.pk}"},
        )
    except stripe_gateway.StripeUnavailable as exc:
        # Maybe done at Stripe, maybe not: keep it pending (it still counts against what is left);
        # the beat job sends it again with the same key, and Stripe's events reconcile it.
        raise RefundPending(
            "Stripe did not answer. The refund is recorded as pending and will be sent again "
            "automatically: do not refund again.",
            headers=exc.headers,
        ) from exc
    except DomainError:
        # Stripe refused it for sure: it never happened and no longer counts.
        with transaction.atomic():
            Refund.objects.filter(pk=refund.pk, stripe_refund_id__isnull=True).update(
                status=Refund.Status.FAILED
            )
            _recount(payment.pk)
        raise
    _attach(refund_id=refund.pk, stripe_refund_id=remote.id, status=str(remote.status))
    refund.refresh_from_db()
    return refund


def _attach(*, refund_id: int, stripe_refund_id: str, status: str, payment_id: int | None = None) -> bool:
    """Give our pending row its Stripe refund (once: from the API answer or from Stripe's event)."""
    with transaction.atomic():
        refund = Refund.objects.filter(pk=refund_id).first()
        if refund is None or (payment_id is not None and refund.payment_id != payment_id):
            return False
        Payment.objects.select_for_update().filter(pk=refund.payment_id).first()
        attached = Refund.objects.filter(pk=refund_id, stripe_refund_id__isnull=True).update(
            stripe_refund_id=stripe_refund_id, status=_STATUS.get(status, Refund.Status.PENDING)
        )
        _recount(refund.payment_id)
        if attached:
            refund.refresh_from_db()
            payment = Payment.objects.get(pk=refund.payment_id)
            event_record(
                event_type=PAYMENT_REFUNDED,
                aggregate_id=payment.pk,
                payload=payment_refunded_payload(payment, refund),
                actor=Actor.of_user(refund.created_by) if refund.created_by_id else None,
            )
            payment_refunded.send(
                sender=Refund, payment=payment, refund=refund, revoke_entitlements=refund.revoke_entitlements
            )
    return bool(attached)


def refunds_resubmit() -> int:
    """Beat job: send again the refunds Stripe never confirmed (same keys: never twice)."""
    stale = timezone.now() - timedelta(minutes=1)
    ids = list(
        Refund.objects.filter(
            status=Refund.Status.PENDING, stripe_refund_id__isnull=True, created_at__lt=stale
        ).values_list("pk", flat=True)[:200]
    )
    done = 0
    for pk in ids:
        try:
            refund_submit(refund_id=pk)
            done += 1
        except DomainError as exc:
            logger.warning("refund %s still not sent: %s", pk, exc.message)
    return done


@dataclass(frozen=True)
class ChargeRefunds:
    """Stripe's refunds of one of our payments' charges, as read from Stripe (outside any transaction)."""

    charge: Mapping[str, Any]  # the charge's "id" and "payment_intent"
    refunds: list[Any]


def _charge_payment(charge: Mapping[str, Any]) -> Payment | None:
    intent_id = charge.get("payment_intent")
    payment = Payment.objects.filter(stripe_payment_intent_id=intent_id).first() if intent_id else None
    if payment is None and charge.get("id"):
        payment = Payment.objects.filter(stripe_charge_id=charge["id"]).first()
    return payment


def charge_refunds_fetch(*, charge: Mapping[str, Any]) -> ChargeRefunds | None:
    """Stripe's current refunds of a charge (charge.refunded): None for a charge not ours.

    Calls Stripe: run it outside any transaction, then hand the answer to `refunds_sync_for_charge`.
    """
    if _charge_payment(charge) is None:
        return None
    remote = stripe_gateway.call(
        stripe_gateway.client().v1.refunds.list, {"charge": charge["id"], "limit": 100}
    )
    return ChargeRefunds(charge=charge, refunds=list(remote.data))


def refund_charge_refunds_fetch(*, refund: Mapping[str, Any]) -> ChargeRefunds | None:
    """refund.created / refund.updated: every refund of that refund's charge, read from Stripe."""
    charge_id = refund.get("charge")
    if not charge_id:
        return None
    charge = stripe_gateway.call(stripe_gateway.client().v1.charges.retrieve, charge_id)
    return charge_refunds_fetch(charge={"id": charge.id, "payment_intent": charge.payment_intent})


def refunds_sync_for_charge(*, charge_refunds: ChargeRefunds | None) -> list[Refund]:
    """Make our refund rows match Stripe's refunds of a charge (charge.refunded, refund.updated).

    Applies what `charge_refunds_fetch` re-read from Stripe, so a late or reordered event still lands
    on the current state; never calls Stripe itself. Refunds made outside this app get a row without
    a staff user.
    """
    if charge_refunds is None:
        return []
    charge = charge_refunds.charge
    payment = _charge_payment(charge)
    if payment is None:
        return []
    rows = []
    with transaction.atomic():
        Payment.objects.select_for_update().filter(pk=payment.pk).first()
        for item in charge_refunds.refunds:
            status = _STATUS.get(str(item.status), Refund.Status.PENDING)
            remote_reason = getattr(item, "reason", None)
            reason = (
                remote_reason
                if remote_reason in Refund.Reason.values
                else Refund.Reason.REQUESTED_BY_CUSTOMER
            )
            ours = str((getattr(item, "metadata", None) or {}).get("refund_id") or "")
            our_id = int_id(ours)
            if our_id is not None and _attach(
                refund_id=our_id, stripe_refund_id=item.id, status=str(item.status), payment_id=payment.pk
            ):
                continue  # our own pending refund, whose API answer was lost or has not arrived yet
            row, created = Refund.objects.get_or_create(
                stripe_refund_id=item.id,
                defaults={
                    "payment": payment,
                    "amount": item.amount,
                    "currency": str(item.currency).upper(),
                    "reason": reason,
                    "status": status,
                    "note": "made outside the back-office",
                },
            )
            if not created and row.status != status:
                Refund.objects.filter(pk=row.pk).update(status=status)
            rows.append(row)
            if created:
                _recount(payment.pk)
                payment.refresh_from_db()
                event_record(
                    event_type=PAYMENT_REFUNDED,
                    aggregate_id=payment.pk,
                    payload=payment_refunded_payload(payment, row),
                )
                payment_refunded.send(sender=Refund, payment=payment, refund=row, revoke_entitlements=False)
        _recount(payment.pk)
    return rows
