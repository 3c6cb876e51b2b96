"""Writes of dunning: cases opened by failed renewals, the sweep that claims due retries, the retry
itself (Stripe called outside any transaction), escalation, recovery, stopping, staff actions and
the emails of each step. See docs/dunning.md for the why.

Who retries: we do (Stripe's automatic retries are off). A retry asks Stripe to pay the open
invoice with an idempotency key per (invoice, attempt), so a task run twice, or a sweep that
re-queues an attempt whose worker died, never charges twice.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Max, Q
from django.template.loader import render_to_string
from django.utils import timezone

from billing.models import Feature, Plan
from billing.money import format_money
from billing.stripe import gateway as stripe_gateway
from payments_project.accounts.services import audit_record
from payments_project.errors import DomainError, ServiceUnavailable
from subscriptions import signals
from subscriptions.dunning import events, metrics
from subscriptions.dunning.models import (
    OPEN_STAGES,
    DeclineRule,
    DunningAttempt,
    DunningCase,
    DunningEmail,
    DunningPolicy,
)
from subscriptions.dunning.selectors import (
    cancel_due_at,
    decline_action,
    dunning_policy_for,
    retry_due_times,
    suspends_after,
)
from subscriptions.models import Subscription, SubscriptionHistory
from subscriptions.services import _lock, _send, _transition_locked
from subscriptions.transitions import ENDED, RENEWAL_UNPAID

logger = logging.getLogger(__name__)
Stage = DunningCase.Stage
AStatus = DunningAttempt.Status
Kind = DunningAttempt.Kind
Step = DunningEmail.Step
Cause = SubscriptionHistory.Cause

# Visa allows 15 re-attempts of one card in 30 days; we stop well before.
CARD_ATTEMPTS_CAP = 10
CARD_ATTEMPTS_WINDOW = timedelta(days=30)
MAX_RETRIES = 10  # a policy's attempts are finite and few
# A claimed attempt whose task never ran (lost message, dead worker) is claimable again after this.
CLAIM_LIMIT = timedelta(minutes=15)
# Stripe unavailable: the attempt is due again this much later (it did not count).
OUTAGE_DELAY = timedelta(minutes=10)
SWEEP_BATCH = 1000
# A read of the failed renewal's card codes, or a void, that Stripe has not answered yet: the sweep
# asks again this much later (each ask is also the claim that keeps two sweeps from both asking).
STRIPE_ASK_AGAIN = timedelta(minutes=5)

RETRY_TASK = "subscriptions.dunning.tasks.dunning_attempt_run_task"
CANCEL_TASK = "subscriptions.dunning.tasks.dunning_case_cancel_task"
EMAIL_TASK = "subscriptions.dunning.tasks.dunning_email_send_task"
INVOICE_END_TASK = "subscriptions.dunning.tasks.dunning_invoice_end_task"
DECLINE_LOOKUP_TASK = "subscriptions.dunning.tasks.dunning_decline_fetch_task"

SUBJECTS: dict[str, str] = {
    Step.PAYMENT_FAILED: "Your payment for {plan} failed",
    Step.RETRY_FAILED: "We could not charge your card for {plan}",
    Step.SUSPENDED: "Your {plan} subscription is suspended",
    Step.CANCELLED: "Your {plan} subscription was cancelled",
    Step.RECOVERED: "Thank you: your {plan} payment went through",
}


def _publish(task: str, *args: Any) -> None:
    """Queue a task after commit; a lost message is found again by the sweep."""
    try:
        current_app.signature(task, args=args).delay()
    except Exception:
        logger.warning("could not queue %s%s; the dunning sweep will", task, args, exc_info=True)


# --- policies -------------------------------------------------------------------------------------
def _interval_days(plan: Plan | None) -> int:
    """The shortest a billing period of the plan can be (a month is 28 days at least)."""
    if plan is None:
        return 28
    per = 365 if plan.interval == Plan.Interval.YEAR else 28
    return per * int(plan.interval_count or 1)


def dunning_policy_validate(
    *,
    plan: Plan | None,
    retry_offsets_days: Any,
    past_due_access: str,
    past_due_features: Any,
    suspend_after_failed_retries: int,
    cancel_after_days: int,
) -> None:
    """Refuse a policy that retries forever, past the billing interval, or out of order; errors by field."""
    errors: dict[str, list[dict[str, str]]] = {}

    def refuse(field: str, message: str) -> None:
        errors.setdefault(field, []).append({"code": "invalid", "message": message})

    offsets = retry_offsets_days
    interval = _interval_days(plan)
    before = len(errors)
    if not isinstance(offsets, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in offsets
    ):
        refuse("retry_offsets_days", "A list of whole days, e.g. [1, 3, 5, 7].")
    elif not 1 <= len(offsets) <= MAX_RETRIES:
        refuse("retry_offsets_days", f"Between 1 and {MAX_RETRIES} retries.")
    elif offsets[0] < 1 or any(b <= a for a, b in itertools.pairwise(offsets)):
        refuse("retry_offsets_days", "Days must be 1 or more and strictly increasing.")
    elif offsets[-1] > interval:
        refuse(
            "retry_offsets_days",
            f"The last retry (day {offsets[-1]}) is past the billing interval ({interval} days).",
        )
    if len(errors) == before:  # the rest is checked against valid offsets only
        if not 1 <= cancel_after_days <= interval:
            refuse("cancel_after_days", f"Cancel between day 1 and the billing interval ({interval} days).")
        elif cancel_after_days <= offsets[-1]:
            refuse("cancel_after_days", f"Cancel after the last retry (day {offsets[-1]}).")
        if not 0 <= suspend_after_failed_retries <= len(offsets):
            refuse("suspend_after_failed_retries", f"Between 0 and the number of retries ({len(offsets)}).")
    if past_due_access not in DunningPolicy.Access.values:
        refuse("past_due_access", "Full, features or none.")
    codes = past_due_features if isinstance(past_due_features, list) else None
    if codes is None or not all(isinstance(c, str) for c in codes):
        refuse("past_due_features", "A list of feature codes.")
    elif past_due_access == DunningPolicy.Access.FEATURES:
        if not codes:
            refuse("past_due_features", "List the features kept while past due.")
        known = set(Feature.objects.filter(code__in=codes).values_list("code", flat=True))
        unknown = sorted(set(codes) - known)
        if unknown:
            refuse("past_due_features", f"Unknown feature codes: {', '.join(unknown)[:150]}.")
    elif codes:
        refuse("past_due_features", "Only with 'listed features only' access.")
    if errors:
        raise DomainError("This dunning policy is not valid.", code="invalid_policy", fields=errors)


def dunning_policy_saved(*, policy: DunningPolicy) -> int:
    """After an edit: open cases of the policy move their cancel day; the number moved."""
    moved = 0
    for case in DunningCase.objects.filter(policy=policy, stage__in=OPEN_STAGES).only(
        "pk", "opened_at", "grace_days"
    ):
        moved += DunningCase.objects.filter(pk=case.pk).update(
            cancel_at=cancel_due_at(policy=policy, opened_at=case.opened_at, grace_days=case.grace_days)
        )
    return moved


# --- emails -------------------------------------------------------------------------------------
def _email_locked(case: DunningCase, step: str, *, kind: str) -> None:
    """Record the step's email once (unique per case and step) and send it after commit."""
    subscription = case.subscription
    to = subscription.user.email
    if not to:
        return
    subject = SUBJECTS[kind].format(plan=subscription.plan.name)[:200]
    try:
        with transaction.atomic():
            email = DunningEmail.objects.create(case=case, step=step[:40], to=to, subject=subject)
    except IntegrityError:
        return  # this step's email exists: a retried step sends nothing more
    transaction.on_commit(lambda: _publish(EMAIL_TASK, email.pk))


def dunning_email_send(*, email_id: int) -> bool:
    """Send one recorded email; True if this call sent it. A second run (task retried) sends
    nothing: the row is claimed by one conditional UPDATE and marked sent."""
    now = timezone.now()
    claimed = DunningEmail.objects.filter(
        Q(sending_until__isnull=True) | Q(sending_until__lt=now), pk=email_id, sent_at__isnull=True
    ).update(sending_until=now + timedelta(minutes=10))
    if not claimed:
        return False
    email = DunningEmail.objects.select_related("case__subscription__plan", "case__subscription__user").get(
        pk=email_id
    )
    case = email.case
    kind = email.step.split(":", 1)[0]
    body = render_to_string(
        f"dunning/{kind}.txt",
        {
            "case": case,
            "plan": case.subscription.plan.name,
            "amount": format_money(case.amount_due, case.currency),
            "update_card_url": settings.DUNNING_UPDATE_CARD_URL,
            "attempt": email.step.split(":", 1)[1] if ":" in email.step else "",
            "needs_new_card": case.needs_new_card,
        },
    )
    try:
        send_mail(email.subject, body, settings.DEFAULT_FROM_EMAIL, [email.to])
    except Exception:
        DunningEmail.objects.filter(pk=email_id).update(sending_until=None)
        raise
    DunningEmail.objects.filter(pk=email_id).update(sent_at=timezone.now(), sending_until=None)
    return True


# --- opening a case -----------------------------------------------------------------------------
def _invoice_subscription_id(data: Mapping[str, Any]) -> str:
    direct = data.get("subscription")
    if isinstance(direct, str) and direct:
        return direct
    details = (data.get("parent") or {}).get("subscription_details") or {}
    return str(details.get("subscription") or "")


def _decline_of(data: Mapping[str, Any]) -> tuple[str, str, str]:
    """The card's codes when the payload carries them (an expanded payment_intent); else they are
    read from Stripe after commit (dunning_decline_fetch)."""
    intent = data.get("payment_intent")
    error = (intent.get("last_payment_error") if isinstance(intent, Mapping) else None) or {}
    return (
        str(error.get("decline_code") or "")[:64],
        str(error.get("advice_code") or "")[:64],
        str(error.get("network_advice_code") or "")[:16],
    )


def _key(case: DunningCase, number: int) -> str:
    return f"dunning:{case.stripe_invoice_id}:{number}"


def _decide_locked(case: DunningCase, *, now: datetime) -> None:
    """The failed renewal's codes are known (or known to be missing): the "payment failed" email,
    then the decline rule (a hard decline skips every retry and asks for a new card), and
    suspension when no retry is left, else access kept until the cancel day."""
    _email_locked(case, Step.PAYMENT_FAILED, kind=Step.PAYMENT_FAILED)
    action, hours = decline_action(
        decline_code=case.last_decline_code,
        advice_code=case.last_advice_code,
        network_advice_code=case.last_network_advice_code,
    )
    _apply_decline_locked(case, action, hours, now=now)
    if not _maybe_suspend_locked(case):
        _grace_locked(case)


def dunning_invoice_failed(*, data: Mapping[str, Any], stripe_event_id: str = "") -> DunningCase | None:
    """invoice.payment_failed of a renewal (our subscription row already moved to past_due): open
    the invoice's case with its retries, once; a second failure of the same invoice (our own
    retry's event) only refreshes the codes. Runs in the caller's transaction.

    An event without the card's codes (Stripe sends the payment intent's id, not its error) opens
    the case undecided: the codes are read from Stripe after commit, outside this transaction,
    and no retry is claimed until they are known (a stolen card is never retried)."""
    invoice_id = str(data.get("id") or "")
    stripe_id = _invoice_subscription_id(data)
    if not invoice_id.startswith("in_") or not stripe_id or len(invoice_id) > 255:
        return None
    if data.get("status") not in ("open", "uncollectible"):
        return None
    with transaction.atomic():
        subscription = (
            Subscription.objects.select_for_update(of=("self",))
            .select_related("plan", "user")
            .filter(stripe_subscription_id=stripe_id)
            .first()
        )
        if (
            subscription is None
            or subscription.status in ENDED
            or subscription.status == Subscription.Status.INCOMPLETE
        ):
            return None  # a first payment (incomplete) is checkout's business
        existing = DunningCase.objects.select_for_update().filter(stripe_invoice_id=invoice_id).first()
        codes = _decline_of(data)
        if existing is not None:
            if any(codes) and existing.is_open:
                existing.last_decline_code, existing.last_advice_code, existing.last_network_advice_code = (
                    codes
                )
                existing.save(
                    update_fields=[
                        "last_decline_code",
                        "last_advice_code",
                        "last_network_advice_code",
                        "updated_at",
                    ]
                )
            return existing
        now = timezone.now()
        policy = dunning_policy_for(plan=subscription.plan)
        undecided = not any(codes)
        case = DunningCase.objects.create(
            subscription=subscription,
            policy=policy,
            stripe_invoice_id=invoice_id,
            stripe_customer_id=str(data.get("customer") or "")[:255],
            amount_due=int(data.get("amount_due") or data.get("amount_remaining") or 0),
            currency=str(data.get("currency") or subscription.currency or "").upper()[:3],
            opened_at=now,
            cancel_at=cancel_due_at(policy=policy, opened_at=now),
            last_decline_code=codes[0],
            last_advice_code=codes[1],
            last_network_advice_code=codes[2],
            decline_lookup_due_at=now + STRIPE_ASK_AGAIN if undecided else None,
        )
        DunningAttempt.objects.bulk_create(
            DunningAttempt(case=case, number=number, due_at=due, idempotency_key=_key(case, number))
            for number, due in enumerate(
                retry_due_times(offsets_days=list(policy.retry_offsets_days), opened_at=now), start=1
            )
        )
        events.case_opened_record(case)
        if undecided:
            # Access is kept meanwhile (the unpaid period has ended); the email waits for the
            # codes, as it says whether we retry or need a new card. The sweep asks again if
            # this task is lost or Stripe does not answer.
            _grace_locked(case)
            pk = case.pk
            transaction.on_commit(lambda: _publish(DECLINE_LOOKUP_TASK, pk))
        else:
            _decide_locked(case, now=now)
        logger.info("dunning case opened", extra={"case_id": case.pk, "stripe_event_id": stripe_event_id})
    return case


def dunning_decline_fetch(*, case_id: int) -> str:
    """An undecided case (its event carried no codes): read why the renewal's payment failed from
    Stripe, with no transaction open, then decide in one short transaction: a hard decline skips
    every retry and asks for a new card before the first one is due. Returns the decline rule's
    action, "decided" (nothing to read), "closed", or "stripe_unavailable" (the sweep asks again)."""
    case = (
        DunningCase.objects.filter(pk=case_id, decline_lookup_due_at__isnull=False)
        .only("pk", "stripe_invoice_id")
        .first()
    )
    if case is None:
        return "decided"
    error: stripe_gateway.PaymentError | None
    try:
        error = stripe_gateway.invoice_payment_error(case.stripe_invoice_id)
    except stripe_gateway.StripeUnavailable:
        DunningCase.objects.filter(pk=case_id, decline_lookup_due_at__isnull=False).update(
            decline_lookup_due_at=timezone.now() + STRIPE_ASK_AGAIN
        )
        return "stripe_unavailable"
    except DomainError as exc:
        # Stripe refused the read (e.g. no such invoice): decide without codes; the first retry's
        # own answer carries them.
        logger.warning("could not read the decline of %s: %s", case.stripe_invoice_id, exc.message)
        error = None
    with transaction.atomic():
        locked = _lock_case(case_id)
        if locked.decline_lookup_due_at is None:
            return "decided" if locked.is_open else "closed"
        locked.decline_lookup_due_at = None
        # A retry that ran meanwhile (a new card, staff) left newer codes than the renewal's.
        superseded = locked.attempts.filter(
            Q(kind__in=(Kind.NEW_CARD, Kind.STAFF))
            | Q(status__in=(AStatus.CLAIMED, AStatus.RUNNING, AStatus.SUCCEEDED, AStatus.FAILED))
        ).exists()
        if error is not None and not superseded:
            locked.last_decline_code = error.decline_code
            locked.last_advice_code = error.advice_code
            locked.last_network_advice_code = error.network_advice_code
            if error.payment_method and not locked.stripe_payment_method_id:
                locked.stripe_payment_method_id = error.payment_method
        locked.save()
        _decide_locked(locked, now=timezone.now())
    action, _ = decline_action(
        decline_code=locked.last_decline_code,
        advice_code=locked.last_advice_code,
        network_advice_code=locked.last_network_advice_code,
    )
    return str(action)


# --- the sweep ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepResult:
    claimed: int
    batches: int
    cancels: int
    decline_lookups: int = 0
    invoice_ends: int = 0


# Publishing is mostly waiting on the broker's round trip: a few threads overlap those waits.
PUBLISH_THREADS = 4


def _publish_slice(task: str, ids: list[int]) -> None:
    try:
        with current_app.producer_or_acquire() as producer:
            for pk in ids:
                current_app.send_task(task, args=(pk,), producer=producer)
    except Exception:
        logger.warning("could not queue %s for %d ids; the dunning sweep will", task, len(ids), exc_info=True)


def _enqueue_each(task: str) -> Callable[[list[int]], None]:
    """One message per id (a lost one is found again by the sweep once its claim expires)."""

    def enqueue(ids: list[int]) -> None:
        if current_app.conf.task_always_eager:
            for pk in ids:
                _publish(task, pk)
            return
        slices = [ids[n::PUBLISH_THREADS] for n in range(PUBLISH_THREADS)]
        with ThreadPoolExecutor(max_workers=PUBLISH_THREADS, thread_name_prefix="dunning-publish") as pool:
            list(pool.map(lambda part: _publish_slice(task, part), [part for part in slices if part]))

    return enqueue


def dunning_sweep(
    *,
    now: datetime | None = None,
    batch_size: int = SWEEP_BATCH,
    enqueue: Callable[[list[int]], None] | None = None,
    enqueue_cancel: Callable[[list[int]], None] | None = None,
) -> SweepResult:
    """Beat job: claim the due retries in batches (SELECT ... FOR UPDATE SKIP LOCKED, then one
    UPDATE per batch) and queue one task per retry after each batch commits; two sweeps at once
    never claim the same retry. Then claim the cases due for cancellation the same way.
    Statements grow with the batches, not with the retries."""
    now = now or timezone.now()
    enqueue = enqueue or _enqueue_each(RETRY_TASK)
    enqueue_cancel = enqueue_cancel or _enqueue_each(CANCEL_TASK)
    # Undecided cases first: their retries wait for the card's codes.
    lookups = _claim_stripe_asks("decline_lookup_due_at", now=now, limit=batch_size)
    if lookups:
        _enqueue_each(DECLINE_LOOKUP_TASK)(lookups)
    # A claim whose task never ran (lost message, dead worker): due again, under the same key.
    DunningAttempt.objects.filter(
        status__in=(AStatus.CLAIMED, AStatus.RUNNING), claimed_until__lt=now
    ).update(status=AStatus.SCHEDULED, claimed_until=None)
    claimed = batches = 0
    while True:
        with transaction.atomic():
            ids = list(
                DunningAttempt.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(
                    status=AStatus.SCHEDULED,
                    due_at__lte=now,
                    case__stage__in=OPEN_STAGES,
                    case__paused=False,
                    case__decline_lookup_due_at__isnull=True,
                )
                .order_by("due_at")
                .values_list("pk", flat=True)[:batch_size]
            )
            if ids:
                DunningAttempt.objects.filter(pk__in=ids).update(
                    status=AStatus.CLAIMED, claimed_until=now + CLAIM_LIMIT
                )
        if not ids:
            break
        batches += 1
        claimed += len(ids)
        enqueue(ids)
        if len(ids) < batch_size:
            break
    with transaction.atomic():
        cancel_ids = list(
            DunningCase.objects.select_for_update(skip_locked=True)
            .filter(stage__in=OPEN_STAGES, paused=False, cancel_at__lte=now)
            .filter(Q(cancel_claimed_until__isnull=True) | Q(cancel_claimed_until__lt=now))
            .values_list("pk", flat=True)[:batch_size]
        )
        if cancel_ids:
            DunningCase.objects.filter(pk__in=cancel_ids).update(cancel_claimed_until=now + CLAIM_LIMIT)
    if cancel_ids:
        enqueue_cancel(cancel_ids)
    # Voids Stripe has not confirmed (its task's tries failed, or its message was lost).
    invoice_ends = _claim_stripe_asks("invoice_end_due_at", now=now, limit=batch_size)
    if invoice_ends:
        _enqueue_each(INVOICE_END_TASK)(invoice_ends)
    _email_sweep(now)
    return SweepResult(
        claimed=claimed,
        batches=batches,
        cancels=len(cancel_ids),
        decline_lookups=len(lookups),
        invoice_ends=len(invoice_ends),
    )


def _claim_stripe_asks(field: str, *, now: datetime, limit: int) -> list[int]:
    """Cases whose `field` (a question for Stripe) is due: claimed by moving it STRIPE_ASK_AGAIN
    later, so that a concurrent sweep skips them and a task that fails is asked again then."""
    due = DunningCase.objects.filter(**{f"{field}__lte": now})
    if not due.exists():
        return []  # the usual case: one cheap read (a partial index), no transaction
    with transaction.atomic():
        ids = list(
            due.select_for_update(skip_locked=True).order_by(field).values_list("pk", flat=True)[:limit]
        )
        if ids:
            DunningCase.objects.filter(pk__in=ids).update(**{field: now + STRIPE_ASK_AGAIN})
    return ids


def _email_sweep(now: datetime) -> None:
    """Emails recorded but never sent (their task was lost): queued again."""
    for pk in DunningEmail.objects.filter(
        Q(sending_until__isnull=True) | Q(sending_until__lt=now),
        sent_at__isnull=True,
        created_at__lt=now - timedelta(minutes=5),
    ).values_list("pk", flat=True)[:500]:
        _publish(EMAIL_TASK, pk)


def dunning_cases_open_by_stage() -> dict[str, int]:
    counts = dict.fromkeys(OPEN_STAGES, 0)
    for row in DunningCase.objects.filter(stage__in=OPEN_STAGES).values("stage").annotate(n=Count("pk")):
        counts[row["stage"]] = row["n"]
    for stage, n in counts.items():
        metrics.dunning_cases_open.labels(stage=stage).set(n)
    return counts


# --- one retry ----------------------------------------------------------------------------------
def _card_attempts_recent(pm: str, now: datetime) -> int:
    return DunningAttempt.objects.filter(
        stripe_payment_method_id=pm,
        status__in=(AStatus.SUCCEEDED, AStatus.FAILED),
        finished_at__gte=now - CARD_ATTEMPTS_WINDOW,
    ).count()


def _finish(attempt: DunningAttempt, status: str, outcome: str, **fields: Any) -> None:
    attempt.status = status
    attempt.outcome = outcome[:300]
    attempt.finished_at = timezone.now()
    attempt.claimed_until = None
    for name, value in fields.items():
        setattr(attempt, name, value)
    attempt.save()


def _lock_case(case_id: int) -> DunningCase:
    # The subscription's row first, then the case's: the webhook handlers (invoice paid or failed)
    # lock in that order, and the opposite order here could deadlock a retry's outcome with them.
    subscription_id = DunningCase.objects.filter(pk=case_id).values_list("subscription_id", flat=True).get()
    list(Subscription.objects.select_for_update().filter(pk=subscription_id).values_list("pk"))
    return (
        DunningCase.objects.select_for_update(of=("self",))
        .select_related("subscription__plan", "subscription__user", "policy")
        .get(pk=case_id)
    )


def dunning_attempt_run(*, attempt_id: int) -> str:
    """Run one claimed retry: checks, then Stripe (no transaction open), then the outcome.

    Only the caller that moves the attempt from claimed to running calls Stripe: a task run twice
    finds it running or finished and returns. Returns what happened."""
    now = timezone.now()
    if not DunningAttempt.objects.filter(pk=attempt_id, status=AStatus.CLAIMED).update(
        status=AStatus.RUNNING, claimed_until=now + CLAIM_LIMIT
    ):
        return "not_claimed"
    attempt = DunningAttempt.objects.select_related("case__subscription", "case__policy").get(pk=attempt_id)
    case = attempt.case
    subscription = case.subscription
    reason = ""
    if not case.is_open:
        reason = f"case {case.stage}"
    elif case.paused:
        reason = "case paused"
    elif subscription.status in ENDED or subscription.cancel_at_period_end:
        reason = "subscription cancelled by the customer"
    elif attempt.kind == Kind.SCHEDULED and case.needs_new_card:
        reason = "hard decline: waiting for a new card"
    elif attempt.kind == Kind.SCHEDULED and case.decline_lookup_due_at is not None:
        # The renewal's codes are not known yet (the sweep claims none of these; a claim from
        # before is put back): it runs once they are, unless they say never.
        DunningAttempt.objects.filter(pk=attempt_id, status=AStatus.RUNNING).update(
            status=AStatus.SCHEDULED, claimed_until=None
        )
        return "undecided"
    if reason:
        with transaction.atomic():
            _finish(attempt, AStatus.CANCELLED, reason)
        return "cancelled"
    card = attempt.stripe_payment_method_id or case.stripe_payment_method_id
    if card and _card_attempts_recent(card, now) >= CARD_ATTEMPTS_CAP:
        with transaction.atomic():
            _finish(attempt, AStatus.SKIPPED, f"card retried {CARD_ATTEMPTS_CAP} times in 30 days")
            events.retry_finished_record(case, attempt, outcome="skipped")
        metrics.dunning_retries_total.labels(outcome="skipped").inc()
        return "skipped"
    metrics.dunning_retries_total.labels(outcome="attempted").inc()
    try:
        result = stripe_gateway.invoice_pay(
            case.stripe_invoice_id,
            idempotency_key=attempt.idempotency_key,
            payment_method=attempt.stripe_payment_method_id if attempt.kind == Kind.NEW_CARD else "",
        )
    except stripe_gateway.StripeUnavailable:
        # Maybe charged, maybe not: due again soon under the same key (Stripe replays its answer).
        DunningAttempt.objects.filter(pk=attempt_id, status=AStatus.RUNNING).update(
            status=AStatus.SCHEDULED, due_at=now + OUTAGE_DELAY, claimed_until=None
        )
        return "stripe_unavailable"
    except DomainError as exc:
        # Stripe refused to pay it: already paid, void, uncollectible... ask what it is now.
        try:
            status = stripe_gateway.invoice_status(case.stripe_invoice_id)
        except DomainError as unknown:
            status = f"unknown ({unknown.message})"
        with transaction.atomic():
            _finish(attempt, AStatus.FAILED, f"{exc.code}: {exc.message}; invoice is {status}")
        if status == "paid":
            dunning_case_recover(case_id=case.pk, reason="invoice already paid")
            return "succeeded"
        if status in ("void", "uncollectible"):
            dunning_case_stop(case_id=case.pk, reason=f"invoice {status} at Stripe", end_invoice=False)
        return "refused"
    if result.paid:
        with transaction.atomic():
            locked = _lock_case(case.pk)
            _finish(
                attempt, AStatus.SUCCEEDED, "paid", stripe_payment_method_id=card or result.payment_method
            )
            events.retry_finished_record(locked, attempt, outcome="succeeded")
            _recover_locked(locked, reason=f"retry {attempt.number} paid")
        metrics.dunning_retries_total.labels(outcome="succeeded").inc()
        return "succeeded"
    with transaction.atomic():
        locked = _lock_case(case.pk)
        _finish(
            attempt,
            AStatus.FAILED,
            result.message or "declined",
            decline_code=result.decline_code,
            advice_code=result.advice_code,
            network_advice_code=result.network_advice_code,
            stripe_payment_method_id=result.payment_method or card,
        )
        events.retry_finished_record(locked, attempt, outcome="failed")
        _retry_failed_locked(locked, attempt)
    metrics.dunning_retries_total.labels(outcome="failed").inc()
    return "failed"


def _apply_decline_locked(case: DunningCase, action: str, hours: int, *, now: datetime) -> None:
    pending = DunningAttempt.objects.filter(case=case, status=AStatus.SCHEDULED, kind=Kind.SCHEDULED)
    if action == DeclineRule.Action.NEVER:
        skipped = list(pending)
        for attempt in skipped:
            _finish(attempt, AStatus.SKIPPED, "hard decline: never retried, new card needed")
            events.retry_finished_record(case, attempt, outcome="skipped")
        if skipped:
            metrics.dunning_retries_total.labels(outcome="skipped").inc(len(skipped))
        if not case.needs_new_card:
            case.needs_new_card = True
            case.save(update_fields=["needs_new_card", "updated_at"])
    elif action == DeclineRule.Action.NOT_BEFORE:
        pending.filter(due_at__lt=now + timedelta(hours=hours)).update(due_at=now + timedelta(hours=hours))


def _retry_failed_locked(case: DunningCase, attempt: DunningAttempt) -> None:
    if attempt.stripe_payment_method_id:
        case.stripe_payment_method_id = attempt.stripe_payment_method_id
    case.last_decline_code = attempt.decline_code
    case.last_advice_code = attempt.advice_code
    case.last_network_advice_code = attempt.network_advice_code
    if attempt.kind == Kind.SCHEDULED:
        case.failed_retries = F("failed_retries") + 1
    case.save()
    case.refresh_from_db(fields=["failed_retries"])
    if not case.is_open:
        return
    action, hours = decline_action(
        decline_code=attempt.decline_code,
        advice_code=attempt.advice_code,
        network_advice_code=attempt.network_advice_code,
    )
    _apply_decline_locked(case, action, hours, now=timezone.now())
    if not _maybe_suspend_locked(case):
        _email_locked(case, f"{Step.RETRY_FAILED}:{attempt.number}", kind=Step.RETRY_FAILED)


def _maybe_suspend_locked(case: DunningCase) -> bool:
    """Past due -> suspended once the policy's failed retries are spent, or none is left."""
    if case.stage != Stage.PAST_DUE:
        return False
    left = DunningAttempt.objects.filter(case=case, status=AStatus.SCHEDULED, kind=Kind.SCHEDULED).exists()
    if case.failed_retries < suspends_after(policy=case.policy) and left:
        return False
    reason = f"{case.failed_retries} retries failed" if left else "no retry left"
    _stage_locked(case, Stage.SUSPENDED, reason=reason)
    sub = _lock(case.subscription)
    if sub.status not in ENDED and sub.status != Subscription.Status.SUSPENDED:
        _send(
            sub,
            _transition_locked(
                subscription=sub,
                to_status=Subscription.Status.SUSPENDED,
                cause=Cause.DUNNING,
                note="dunning: retries failed",
            ),
        )
        # past_due -> suspended sends no signal by the table (both keep access suspended); the
        # policy may have kept some features while past due: suspend them all now.
        _send(sub, [signals.subscription_suspended])
    _email_locked(case, Step.SUSPENDED, kind=Step.SUSPENDED)
    return True


def _grace_locked(case: DunningCase) -> None:
    """What the policy keeps while past due stays usable until the cancel day, even though the
    unpaid period has ended (else access would lapse in the middle of the retries)."""
    if case.stage == Stage.PAST_DUE and case.policy.past_due_access != DunningPolicy.Access.NONE:
        signals.subscription_grace_extended.send(
            sender=Subscription, subscription=case.subscription, until=case.cancel_at
        )


def _stage_locked(case: DunningCase, stage: str, *, reason: str, staff_user: Any = None) -> None:
    from_stage = case.stage
    case.stage = stage
    fields = ["stage", "updated_at"]
    if stage not in OPEN_STAGES:
        case.closed_at = timezone.now()
        case.close_reason = reason[:200]
        case.decline_lookup_due_at = None  # nothing left to decide
        fields += ["closed_at", "close_reason", "decline_lookup_due_at"]
        DunningAttempt.objects.filter(case=case, status__in=(AStatus.SCHEDULED, AStatus.CLAIMED)).update(
            status=AStatus.CANCELLED, outcome=f"case {stage}", finished_at=case.closed_at, claimed_until=None
        )
    case.save(update_fields=fields)
    events.stage_changed_record(case, from_stage=from_stage, reason=reason, staff_user=staff_user)


# --- closing ------------------------------------------------------------------------------------
def _recover_locked(case: DunningCase, *, reason: str, staff_user: Any = None) -> bool:
    if not case.is_open:
        return False
    case.recovered_amount = case.amount_due
    case.save(update_fields=["recovered_amount", "updated_at"])
    _stage_locked(case, Stage.RECOVERED, reason=reason, staff_user=staff_user)
    sub = _lock(case.subscription)
    if sub.status in RENEWAL_UNPAID:
        _send(
            sub,
            _transition_locked(
                subscription=sub,
                to_status=Subscription.Status.ACTIVE,
                cause=Cause.DUNNING,
                note=f"dunning: {reason}",
            ),
        )
    _email_locked(case, Step.RECOVERED, kind=Step.RECOVERED)
    currency = case.currency
    amount = case.amount_due
    transaction.on_commit(lambda: metrics.dunning_recovered_amount.labels(currency=currency).inc(amount))
    return True


def dunning_case_recover(*, case_id: int, reason: str, staff_user: Any = None) -> bool:
    """The invoice is paid (a retry, the customer, or Stripe's event): close the case and give
    access back at once. True if this call closed it."""
    with transaction.atomic():
        return _recover_locked(_lock_case(case_id), reason=reason, staff_user=staff_user)


def dunning_invoice_paid(*, data: Mapping[str, Any]) -> DunningCase | None:
    """invoice.payment_succeeded / invoice.paid: the invoice's case, if open, is recovered."""
    case = DunningCase.objects.filter(stripe_invoice_id=str(data.get("id") or "")).first()
    if case is None:
        return None
    dunning_case_recover(case_id=case.pk, reason="invoice paid")
    return case


def dunning_case_stop(*, case_id: int, reason: str, end_invoice: bool = True, staff_user: Any = None) -> bool:
    """No more dunning for this invoice (the customer cancelled, staff resolved it, the invoice
    ended at Stripe): every pending retry cancelled; the open invoice voided at Stripe after
    commit, so it is never collected later. True if this call stopped it."""
    with transaction.atomic():
        case = _lock_case(case_id)
        if not case.is_open:
            return False
        _stage_locked(case, Stage.STOPPED, reason=reason, staff_user=staff_user)
        if staff_user is not None:
            audit_record(
                actor=staff_user,
                action="dunning.resolved",
                target=case,
                subject_user_id=case.subscription.user_id,
                reason=reason,
            )
        if end_invoice:
            # Recorded with the stop, so that the sweep voids it whatever happens to the task.
            DunningCase.objects.filter(pk=case_id).update(
                invoice_end_due_at=timezone.now() + STRIPE_ASK_AGAIN
            )
            transaction.on_commit(lambda: _publish(INVOICE_END_TASK, case_id))
    return True


def dunning_cases_stop_for_subscription(*, subscription: Subscription, reason: str) -> int:
    """The customer cancelled: dunning of each of their open invoices stops."""
    stopped = 0
    now = timezone.now()
    # A case whose own cancellation is under way (Stripe's deletion event may come first) is left
    # to finish it: it closes as cancelled, with its email.
    cases = DunningCase.objects.filter(subscription=subscription, stage__in=OPEN_STAGES).filter(
        Q(cancel_claimed_until__isnull=True) | Q(cancel_claimed_until__lt=now)
    )
    for pk in cases.values_list("pk", flat=True):
        stopped += dunning_case_stop(case_id=pk, reason=reason)
    return stopped


# Stripe's invoice statuses after which nothing can collect it any more (or it was collected).
INVOICE_ENDED = ("void", "uncollectible", "paid")


def dunning_invoice_end(*, case_id: int) -> str:
    """Void (or mark uncollectible, per policy) a stopped or cancelled case's invoice at Stripe,
    always under the same key. Until Stripe confirms the invoice ended, a stopped case's pending
    end (`invoice_end_due_at`) stays and the sweep asks again. Returns the invoice's status."""
    case = DunningCase.objects.select_related("policy").get(pk=case_id)
    pending = DunningCase.objects.filter(pk=case_id, invoice_end_due_at__isnull=False)
    try:
        status = stripe_gateway.invoice_end(
            case.stripe_invoice_id,
            uncollectible=case.policy.invoice_end == DunningPolicy.InvoiceEnd.UNCOLLECTIBLE,
            idempotency_key=f"dunning:{case.stripe_invoice_id}:end",
        )
    except ServiceUnavailable:
        pending.update(invoice_end_due_at=timezone.now() + STRIPE_ASK_AGAIN)
        raise
    except DomainError:
        # Stripe answered and refused (the invoice is gone, or cannot be ended from its state):
        # asking again would be refused again, every few minutes for ever. The case keeps its
        # invoice id for staff, and the error is logged for them.
        logger.error("invoice %s of dunning case %s cannot be ended", case.stripe_invoice_id, case_id)
        pending.update(invoice_end_due_at=None)
        raise
    if status in INVOICE_ENDED:
        pending.update(invoice_end_due_at=None)
    else:
        logger.warning("invoice %s still %s after ending it", case.stripe_invoice_id, status)
        pending.update(invoice_end_due_at=timezone.now() + STRIPE_ASK_AGAIN)
    return status


def dunning_invoice_ended(*, data: Mapping[str, Any]) -> int:
    """invoice.voided / invoice.marked_uncollectible (by us or in the dashboard): nothing is left to
    collect, so its open case stops and a pending end is confirmed. The cases stopped."""
    invoice_id = str(data.get("id") or "")
    stopped = 0
    for pk in DunningCase.objects.filter(stripe_invoice_id=invoice_id).values_list("pk", flat=True):
        stopped += dunning_case_stop(
            case_id=pk, reason=f"invoice {data.get('status')} at Stripe", end_invoice=False
        )
    if invoice_id and data.get("status") in INVOICE_ENDED:
        DunningCase.objects.filter(stripe_invoice_id=invoice_id, invoice_end_due_at__isnull=False).update(
            invoice_end_due_at=None
        )
    return stopped


def dunning_case_cancel(*, case_id: int) -> str:
    """The cancel day came: the invoice ends at Stripe (never collected later), the subscription is
    cancelled there, then here (entitlements revoked), and the customer told. Stripe is called
    with no transaction open, under keys derived from the invoice, so a rerun does it once."""
    case = DunningCase.objects.select_related("subscription", "policy").get(pk=case_id)
    if not case.is_open or case.paused or case.cancel_at > timezone.now():
        return "not_due"
    invoice_status = dunning_invoice_end(case_id=case_id)
    if invoice_status == "paid":
        dunning_case_recover(case_id=case_id, reason="invoice paid before cancellation")
        return "recovered"
    if case.subscription.stripe_subscription_id:
        stripe_gateway.subscription_cancel_now(
            case.subscription.stripe_subscription_id,
            idempotency_key=f"dunning:{case.stripe_invoice_id}:cancel",
        )
    with transaction.atomic():
        locked = _lock_case(case_id)
        if not locked.is_open:
            return "closed"
        end = "voided" if invoice_status == "void" else invoice_status
        _stage_locked(locked, Stage.CANCELLED, reason=f"not paid by the cancel day; invoice {end}")
        sub = _lock(locked.subscription)
        if sub.status not in ENDED:
            _send(
                sub,
                _transition_locked(
                    subscription=sub,
                    to_status=Subscription.Status.CANCELLED,
                    cause=Cause.DUNNING,
                    note="dunning: not paid by the cancel day",
                ),
            )
        _email_locked(locked, Step.CANCELLED, kind=Step.CANCELLED)
    return "cancelled"


# --- new card, staff actions --------------------------------------------------------------------
def _next_number(case: DunningCase) -> int:
    return int(case.attempts.aggregate(n=Max("number"))["n"] or 0) + 1


def _immediate_locked(
    case: DunningCase, *, kind: str, key: str, payment_method: str = ""
) -> DunningAttempt | None:
    """An attempt due now, claimed at once and queued after commit; None if `key` was used."""
    if DunningAttempt.objects.filter(idempotency_key=key).exists():
        return None
    attempt = DunningAttempt.objects.create(
        case=case,
        number=_next_number(case),
        kind=kind,
        status=AStatus.CLAIMED,
        due_at=timezone.now(),
        claimed_until=timezone.now() + CLAIM_LIMIT,
        idempotency_key=key,
        stripe_payment_method_id=payment_method,
    )
    transaction.on_commit(lambda: _publish(RETRY_TASK, attempt.pk))
    return attempt


def dunning_new_card(*, stripe_customer_id: str, payment_method: str) -> list[DunningAttempt]:
    """The customer added a card: one immediate retry per new card of each open case (it does not
    count as an automatic retry, and a hard decline no longer blocks retries)."""
    if not stripe_customer_id or not payment_method.startswith("pm_") or len(payment_method) > 200:
        return []
    made = []
    for pk in DunningCase.objects.filter(
        stripe_customer_id=stripe_customer_id, stage__in=OPEN_STAGES
    ).values_list("pk", flat=True):
        with transaction.atomic():
            case = _lock_case(pk)
            if not case.is_open:
                continue
            attempt = _immediate_locked(
                case,
                kind=Kind.NEW_CARD,
                key=f"dunning:{case.stripe_invoice_id}:card:{payment_method}",
                payment_method=payment_method,
            )
            if attempt is not None:
                made.append(attempt)
                if case.needs_new_card:
                    case.needs_new_card = False
                    case.save(update_fields=["needs_new_card", "updated_at"])
    return made


STAFF_PERMISSION = "subscriptions.change_dunningcase"


def _check_staff(staff_user: Any) -> None:
    if not staff_user.has_perm(STAFF_PERMISSION):
        raise DomainError("Only finance staff may steer dunning.", code="forbidden", status_code=403)


def dunning_retry_now(*, case: DunningCase, staff_user: Any, reason: str) -> DunningAttempt:
    _check_staff(staff_user)
    with transaction.atomic():
        locked = _lock_case(case.pk)
        if not locked.is_open:
            raise DomainError("This case is closed.", code="case_closed", status_code=409)
        number = _next_number(locked)
        attempt = _immediate_locked(locked, kind=Kind.STAFF, key=_key(locked, number))
        assert attempt is not None
        audit_record(
            actor=staff_user,
            action="dunning.retry_now",
            target=locked,
            subject_user_id=locked.subscription.user_id,
            reason=reason,
            data={"attempt": attempt.number},
        )
    return attempt


def dunning_pause(*, case: DunningCase, staff_user: Any, paused: bool, reason: str) -> DunningCase:
    """Pause (or resume) a case: no retry and no cancellation while paused."""
    _check_staff(staff_user)
    with transaction.atomic():
        locked = _lock_case(case.pk)
        if not locked.is_open:
            raise DomainError("This case is closed.", code="case_closed", status_code=409)
        locked.paused = paused
        locked.save(update_fields=["paused", "updated_at"])
        audit_record(
            actor=staff_user,
            action="dunning.resume" if not paused else "dunning.pause",
            target=locked,
            subject_user_id=locked.subscription.user_id,
            reason=reason,
        )
    return locked


def dunning_extend_grace(*, case: DunningCase, staff_user: Any, days: int, reason: str) -> DunningCase:
    """Push the cancel day `days` later (1 to 30 at a time, at most 60 in all)."""
    _check_staff(staff_user)
    if not 1 <= days <= 30:
        raise DomainError(
            "Extend by 1 to 30 days.",
            code="invalid_days",
            fields={"days": [{"code": "invalid", "message": "1 to 30."}]},
        )
    with transaction.atomic():
        locked = _lock_case(case.pk)
        if not locked.is_open:
            raise DomainError("This case is closed.", code="case_closed", status_code=409)
        if locked.grace_days + days > 60:
            raise DomainError("At most 60 days of grace in all.", code="invalid_days")
        locked.grace_days += days
        locked.cancel_at = cancel_due_at(
            policy=locked.policy, opened_at=locked.opened_at, grace_days=locked.grace_days
        )
        locked.save(update_fields=["grace_days", "cancel_at", "updated_at"])
        _grace_locked(locked)
        audit_record(
            actor=staff_user,
            action="dunning.extend_grace",
            target=locked,
            subject_user_id=locked.subscription.user_id,
            reason=reason,
            data={"days": days},
        )
    return locked


def dunning_mark_resolved(*, case: DunningCase, staff_user: Any, reason: str) -> bool:
    """Staff settled it another way (e.g. paid out of band): retries stop, the invoice is left as it is."""
    _check_staff(staff_user)
    return dunning_case_stop(
        case_id=case.pk, reason=f"resolved by staff: {reason}"[:200], end_invoice=False, staff_user=staff_user
    )
