"""Writes to subscriptions: status changes, Stripe's webhooks applied, customer operations.

Every write locks the subscription row (select_for_update) for its whole transaction, so two
deliveries or two clicks never both apply. Stripe's events carry `event_created`: a row remembers
the newest one applied (`stripe_state_at`) and an older delivery changes nothing. Stripe itself is
never called inside those transactions (see the customer operations below).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from celery import current_app
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Case, F, OuterRef, Q, QuerySet, Subquery, When
from django.dispatch import Signal
from django.utils import timezone

from billing.catalog.selectors import Quote, plan_quote, stripe_price_find
from billing.catalog.services import plan_metered_prices_ensure
from billing.models import MeteredPrice, Plan, PricingZone, StripePrice
from billing.money import format_money
from billing.stripe import gateway as stripe_gateway
from payments_project.accounts.selectors import can_act_for_any_user
from payments_project.accounts.services import audit_record
from payments_project.errors import Conflict, DomainError, NotFound, constraint_name
from payments_project.ids import int_id
from subscriptions import events, signals
from subscriptions.dunning.models import OPEN_STAGES as DUNNING_OPEN_STAGES
from subscriptions.dunning.models import DunningCase
from subscriptions.models import Family, Subscription, SubscriptionHistory, SubscriptionStripeCall
from subscriptions.transitions import (
    BLOCKS_NEW_CHECKOUT,
    ENDED,
    GIVES_ACCESS,
    RENEWAL_UNPAID,
    STRIPE_STATUS,
    is_allowed,
    signals_for,
)

logger = logging.getLogger(__name__)
Status = Subscription.Status
Cause = SubscriptionHistory.Cause


class IllegalTransition(Conflict):
    code = "illegal_transition"


# --- status changes -------------------------------------------------------------------------------
def _transition_locked(
    *,
    subscription: Subscription,
    to_status: str,
    cause: str,
    stripe_event_id: str = "",
    staff_user: Any = None,
    note: str = "",
) -> list[Signal]:
    """Apply one change to a row the caller has locked; returns the signals to send (not sent)."""
    from_status = subscription.status
    if from_status == to_status:
        return []
    if not is_allowed(from_status, to_status):
        logger.warning(
            "refused subscription transition %s -> %s",
            from_status,
            to_status,
            extra={"subscription_id": subscription.pk, "cause": cause, "stripe_event_id": stripe_event_id},
        )
        raise IllegalTransition(f"A subscription cannot go from {from_status} to {to_status}.")
    subscription.status = to_status
    fields = ["status", "updated_at"]
    if to_status == Status.CANCELLED and subscription.cancelled_at is None:
        subscription.cancelled_at = timezone.now()
        fields.append("cancelled_at")
    subscription.save(update_fields=fields)
    SubscriptionHistory.objects.create(
        subscription=subscription,
        from_status=from_status,
        to_status=to_status,
        cause=cause,
        stripe_event_id=stripe_event_id,
        staff_user=staff_user,
        note=note,
    )
    events.subscription_status_changed_record(
        subscription,
        from_status=from_status,
        cause=cause,
        stripe_event_id=stripe_event_id,
        staff_user=staff_user,
    )
    return signals_for(from_status, to_status)


def _send(subscription: Subscription, to_send: list[Signal]) -> None:
    for signal in to_send:
        signal.send(sender=Subscription, subscription=subscription)


def _lock(subscription: Subscription) -> Subscription:
    return Subscription.objects.select_for_update().select_related("plan").get(pk=subscription.pk)


def _refresh_from(target: Subscription, source: Subscription) -> None:
    """Let the caller's instance see what was written through the locked copy."""
    for field in Subscription._meta.concrete_fields:
        setattr(target, field.attname, getattr(source, field.attname))


def subscription_transition(
    *,
    subscription: Subscription,
    to_status: str,
    cause: str,
    stripe_event_id: str = "",
    staff_user: Any = None,
    note: str = "",
) -> Subscription:
    """Move `subscription` to `to_status` if the table allows it (same status: nothing happens)."""
    try:
        with transaction.atomic():
            locked = _lock(subscription)
            to_send = _transition_locked(
                subscription=locked,
                to_status=to_status,
                cause=cause,
                stripe_event_id=stripe_event_id,
                staff_user=staff_user,
                note=note,
            )
            _send(locked, to_send)
    except IntegrityError as exc:
        if constraint_name(exc) not in ONE_LIVE_CONSTRAINTS:
            raise
        raise Conflict(
            "The customer (or their family) already has a live subscription.", code="already_subscribed"
        ) from exc
    _refresh_from(subscription, locked)
    return subscription


# --- Stripe payloads -----------------------------------------------------------------------------
def _ts(value: Any) -> datetime | None:
    return None if value in (None, "") else datetime.fromtimestamp(int(value), tz=UTC)


def _price_id_of(obj: Mapping[str, Any]) -> str:
    """The price of a subscription item or invoice line, in any API version's shape."""
    price = obj.get("price")
    if isinstance(price, Mapping):
        return str(price.get("id") or "")
    if isinstance(price, str):
        return price
    details = (obj.get("pricing") or {}).get("price_details") or {}
    return str(details.get("price") or _mapping(obj.get("plan")).get("id") or "")


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _metered_price_ids(objs: list[Mapping[str, Any]]) -> set[str]:
    """Which of these items' or lines' prices are metered: Stripe says so on an expanded price
    (`recurring.usage_type`) or plan (`usage_type`); a bare price id is looked up in our catalog."""
    metered: set[str] = set()
    unknown: set[str] = set()
    for obj in objs:
        price_id = _price_id_of(obj)
        recurring = _mapping(_mapping(obj.get("price")).get("recurring"))
        usage_type = recurring.get("usage_type") or _mapping(obj.get("plan")).get("usage_type")
        if usage_type == "metered":
            metered.add(price_id)
        elif usage_type is None and price_id:
            unknown.add(price_id)
    if unknown:
        known = MeteredPrice.objects.filter(stripe_price_id__in=unknown).values_list(
            "stripe_price_id", flat=True
        )
        metered.update(price_id for price_id in known if price_id)
    return metered


def _licensed_item(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """The item billing the plan's own price. A subscription also carries one metered item per
    usage-priced feature (added at checkout), which never says which plan is bought."""
    items = (data.get("items") or {}).get("data") or []
    metered = _metered_price_ids(items)
    for item in items:
        if _price_id_of(item) not in metered:
            return item
    return items[0] if items else {}


def _plan_for_price(price: Mapping[str, Any] | None) -> Plan | None:
    if not price:
        return None
    row = StripePrice.objects.select_related("plan").filter(stripe_price_id=price.get("id")).first()
    if row is not None:
        return row.plan
    for code in ((price.get("metadata") or {}).get("plan_code"), price.get("lookup_key")):
        if code:
            plan = Plan.objects.filter(code=code).first()
            if plan is not None:
                return plan
    return None


def _plan_from(metadata: Mapping[str, Any], price: Mapping[str, Any] | None) -> Plan | None:
    """The price says which plan is billed now; the metadata is what was bought at signup."""
    plan = _plan_for_price(price)
    if plan is None and metadata.get("plan_code"):
        plan = Plan.objects.filter(code=metadata["plan_code"]).first()
    return plan


def _new_row_fields(metadata: Mapping[str, Any], price: Mapping[str, Any] | None) -> dict[str, Any]:
    """Who and what a subscription we have never seen is for, from our own metadata."""
    user = None
    user_id = str(metadata.get("user_id") or "")
    user_pk = int_id(user_id)
    if user_pk is not None:
        user = get_user_model().objects.filter(pk=user_pk).first()
    if user is None:
        raise NotFound(f"No user {user_id or '(missing)'} for this subscription.", code="unknown_user")
    plan = _plan_from(metadata, price)
    if plan is None:
        raise NotFound("No plan matches this subscription.", code="unknown_plan")
    family_pk = int_id(metadata.get("family_id") or "")
    zone_code = metadata.get("pricing_zone") or ""
    return {
        "user": user,
        "plan": plan,
        "family": Family.objects.filter(pk=family_pk).first() if family_pk is not None else None,
        "pricing_zone": PricingZone.objects.filter(code=zone_code).first() if zone_code else None,
    }


def _lock_or_create(stripe_id: str, new_fields: Callable[[], dict[str, Any]]) -> Subscription:
    """The row of `stripe_id`, locked; created from `new_fields()` if absent (race-safe)."""
    rows = Subscription.objects.select_for_update().select_related("plan")
    row = rows.filter(stripe_subscription_id=stripe_id).first()
    if row is not None:
        return row
    fields = new_fields()
    try:
        with transaction.atomic():  # savepoint: a concurrent insert wins the unique constraint
            events.subscription_created_record(
                Subscription.objects.create(stripe_subscription_id=stripe_id, **fields)
            )
    except IntegrityError:
        pass
    return rows.get(stripe_subscription_id=stripe_id)


def _is_stale(subscription: Subscription, event_created: datetime, event_id: str) -> bool:
    if subscription.stripe_state_at is not None and event_created < subscription.stripe_state_at:
        logger.info(
            "ignored Stripe event older than the applied state",
            extra={"subscription_id": subscription.pk, "stripe_event_id": event_id},
        )
        return True
    return False


def _safe_transition(
    subscription: Subscription, to_status: str, event_id: str, *, cause: str = Cause.WEBHOOK
) -> list[Signal]:
    """Webhooks: a transition the table refuses is logged and skipped, the rest still applies
    (raising would only make Stripe retry a delivery that can never succeed).

    A subscription that would go live while its customer (or family) already has a live one breaks
    the one-live constraints (the database decides, whatever the timing): it is cancelled instead
    and settled at Stripe after commit (see _duplicate_cancel_locked)."""
    before = (subscription.status, subscription.cancelled_at)
    try:
        with transaction.atomic():  # a savepoint: a refused change leaves the rest of the event
            return _transition_locked(
                subscription=subscription, to_status=to_status, cause=cause, stripe_event_id=event_id
            )
    except IllegalTransition:
        return []
    except IntegrityError as exc:
        if constraint_name(exc) not in ONE_LIVE_CONSTRAINTS:
            raise
        subscription.status, subscription.cancelled_at = before
        return _duplicate_cancel_locked(subscription=subscription, event_id=event_id, cause=cause)


ONE_LIVE_CONSTRAINTS = frozenset({"subscription_one_live_per_user", "subscription_one_live_per_family"})
# The task that settles a duplicate at Stripe, named rather than imported (tasks import services).
DUPLICATE_SETTLE_TASK = "subscriptions.tasks.subscription_duplicate_settle_task"


def _duplicate_cancel_locked(
    *, subscription: Subscription, event_id: str, cause: str = Cause.WEBHOOK
) -> list[Signal]:
    """Stripe completed a second subscription for a customer (or family) who has a live one: the
    customer keeps the live one; this one is cancelled now, so it never grants anything, with the
    reason on its history and in the audit log, and is cancelled and refunded at Stripe after
    commit (a Celery task; the beat job subscriptions-duplicates-settle retries what is left)."""
    same_holder = Q(user_id=subscription.user_id)
    if subscription.family_id:
        same_holder |= Q(family_id=subscription.family_id)
    kept = (
        Subscription.objects.filter(same_holder, status__in=BLOCKS_NEW_CHECKOUT)
        .exclude(pk=subscription.pk)
        .order_by("pk")
        .first()
    )
    kept_name = f"subscription #{kept.pk} ({kept.stripe_subscription_id})" if kept else "another subscription"
    reason = (
        f"Duplicate: the customer already had a live {kept_name}. Cancelled at once; at Stripe it is "
        "cancelled too and its first charge refunded (a trial ends with no charge)."
    )
    subscription.duplicate_of = kept
    subscription.save(update_fields=["duplicate_of", "updated_at"])
    to_send = _transition_locked(
        subscription=subscription,
        to_status=Status.CANCELLED,
        cause=cause,
        stripe_event_id=event_id,
        note=reason,
    )
    audit_record(
        actor=None,
        action="subscription.duplicate_cancelled",
        target=subscription,
        subject_user_id=subscription.user_id,
        reason=reason,
        data={"kept_subscription_id": kept.pk if kept else None, "stripe_event_id": event_id},
    )
    logger.warning(
        "duplicate subscription cancelled",
        extra={"subscription_id": subscription.pk, "kept_subscription_id": kept.pk if kept else None},
    )
    pk = subscription.pk
    transaction.on_commit(lambda: _publish_duplicate_settle(pk))
    return to_send


def _publish_duplicate_settle(subscription_id: int) -> None:
    try:
        current_app.signature(DUPLICATE_SETTLE_TASK, args=(subscription_id,)).delay()
    except Exception:
        logger.warning(
            "could not queue the settling of duplicate %s; the beat job will", subscription_id, exc_info=True
        )


def _announce_period(subscription: Subscription, to_send: list[Signal]) -> list[Signal]:
    """Add `renewed` when a live subscription's period end moved past what receivers know."""
    end = subscription.current_period_end
    if subscription.status not in GIVES_ACCESS or end is None:
        return to_send
    if subscription.announced_period_end is not None and end <= subscription.announced_period_end:
        return to_send
    subscription.announced_period_end = end
    subscription.save(update_fields=["announced_period_end", "updated_at"])
    if signals.subscription_activated in to_send:
        return to_send  # activation grants through the current period already
    return [*to_send, signals.subscription_renewed]


def _dunning_keeps_suspended(subscription: Subscription, status: str) -> bool:
    """Stripe has no "suspended": it keeps saying past_due (or unpaid) until the invoice is paid.
    While a dunning case is open, our suspension stands: dunning's stage decides it, and only a
    payment (active), an ending or dunning itself moves the subscription on."""
    return (
        subscription.status == Status.SUSPENDED
        and status in (Status.PAST_DUE, Status.UNPAID)
        and DunningCase.objects.filter(subscription=subscription, stage__in=DUNNING_OPEN_STAGES).exists()
    )


def subscription_sync_from_stripe(
    *, data: dict, event_id: str, event_created: datetime, cause: str = Cause.WEBHOOK
) -> Subscription:
    """Apply a Stripe Subscription object (customer.subscription.created/updated/deleted, or one
    read from Stripe by the reconcile job: cause SCHEDULE)."""
    item = _licensed_item(data)
    metadata = data.get("metadata") or {}
    with transaction.atomic():
        sub = _lock_or_create(data["id"], lambda: _new_row_fields(metadata, item.get("price")))
        if _is_stale(sub, event_created, event_id):
            return sub
        previous_plan = sub.plan
        plan = _plan_from(metadata, item.get("price")) or previous_plan
        price = item.get("price") or {}
        sub.plan = plan
        if price.get("currency") and price.get("unit_amount") is not None:
            sub.currency = str(price["currency"]).upper()
            sub.amount = int(price["unit_amount"])
        start = data.get("current_period_start") or item.get("current_period_start")
        end = data.get("current_period_end") or item.get("current_period_end")
        sub.current_period_start = _ts(start) or sub.current_period_start
        sub.current_period_end = _ts(end) or sub.current_period_end
        sub.trial_end = _ts(data.get("trial_end"))
        cancel_flag_before = sub.cancel_at_period_end
        sub.cancel_at_period_end = bool(data.get("cancel_at_period_end"))
        sub.cancelled_at = _ts(data.get("canceled_at")) or sub.cancelled_at
        sub.stripe_state_at = event_created
        sub.save()
        to_send: list[Signal] = []
        status = STRIPE_STATUS.get(str(data.get("status")))
        if status is not None:
            _reconcile_hold_release(sub, cause=cause, event_id=event_id)
        if status is None:
            logger.error("unknown Stripe subscription status %r", data.get("status"))
        elif _dunning_keeps_suspended(sub, status):
            logger.info(
                "Stripe says %s; dunning keeps the subscription suspended",
                status,
                extra={"subscription_id": sub.pk, "stripe_event_id": event_id},
            )
        else:
            to_send = _safe_transition(sub, status, event_id, cause=cause)
        to_send = _announce_period(sub, to_send)
        _send(sub, to_send)
        if sub.cancel_at_period_end != cancel_flag_before and sub.status not in ENDED:
            events.subscription_cancel_flag_record(sub)
        if plan.pk != previous_plan.pk and sub.status not in ENDED:
            events.subscription_plan_changed_record(sub, from_plan_code=previous_plan.code)
            signals.subscription_plan_changed.send(
                sender=Subscription, subscription=sub, previous_plan=previous_plan
            )
    return sub


def _invoice_subscription_id(data: Mapping[str, Any]) -> str:
    """Older API versions put it on the invoice, newer ones under parent.subscription_details."""
    direct = data.get("subscription")
    if isinstance(direct, str) and direct:
        return direct
    details = (data.get("parent") or {}).get("subscription_details") or {}
    return str(details.get("subscription") or "")


def _invoice_metadata(data: Mapping[str, Any]) -> Mapping[str, Any]:
    details = (data.get("parent") or {}).get("subscription_details") or {}
    return details.get("metadata") or data.get("subscription_details", {}).get("metadata") or {}


def _invoice_subscription_line(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """The line that bills the subscription's period (not an invoice item, not a proration, not
    a metered feature's usage: that line's period is the one that ended)."""
    lines = (data.get("lines") or {}).get("data") or []
    metered = _metered_price_ids(lines)
    for line in lines:
        if metered and _price_id_of(line) in metered:
            continue
        parent = line.get("parent") or {}
        details = parent.get("subscription_item_details") or {}
        is_subscription = line.get("type") == "subscription" or parent.get("type") == (
            "subscription_item_details"
        )
        if is_subscription and not (line.get("proration") or details.get("proration")):
            return line
    return lines[0] if lines else {}


def _invoice_row(data: Mapping[str, Any], line: Mapping[str, Any]) -> Subscription | None:
    stripe_id = _invoice_subscription_id(data)
    if not stripe_id:
        return None
    metadata = _invoice_metadata(data)
    return _lock_or_create(stripe_id, lambda: _new_row_fields(metadata, line.get("price")))


def subscription_apply_invoice_paid(
    *, data: dict, event_id: str, event_created: datetime
) -> Subscription | None:
    """invoice.payment_succeeded/paid: the paid period becomes current, the subscription active."""
    line = _invoice_subscription_line(data)
    with transaction.atomic():
        sub = _invoice_row(data, line)
        if sub is None or _is_stale(sub, event_created, event_id):
            return sub
        period = line.get("period") or {}
        start, end = _ts(period.get("start")), _ts(period.get("end"))
        current = end is None or sub.current_period_end is None or end >= sub.current_period_end
        if end is not None and current:
            sub.current_period_start, sub.current_period_end = start, end
        sub.stripe_state_at = event_created
        sub.save()
        # A trial's 0-amount invoice is paid too: the subscription stays trialing. An older
        # period's invoice paid late says nothing about now (e.g. the current one may be past due).
        trial_invoice = sub.status == Status.TRIALING and not data.get("amount_paid")
        to_send = [] if trial_invoice or not current else _safe_transition(sub, Status.ACTIVE, event_id)
        _send(sub, _announce_period(sub, to_send))
    return sub


def subscription_apply_invoice_failed(
    *, data: dict, event_id: str, event_created: datetime
) -> Subscription | None:
    """invoice.payment_failed: a live subscription becomes past_due (incomplete ones stay)."""
    line = _invoice_subscription_line(data)
    with transaction.atomic():
        sub = _invoice_row(data, line)
        if sub is None or _is_stale(sub, event_created, event_id):
            return sub
        sub.stripe_state_at = event_created
        sub.save(update_fields=["stripe_state_at", "updated_at"])
        _reconcile_hold_release(sub, cause=Cause.WEBHOOK, event_id=event_id)
        if sub.status in GIVES_ACCESS:
            _send(sub, _safe_transition(sub, Status.PAST_DUE, event_id))
    return sub


def subscription_from_checkout(*, data: dict, event_id: str, event_created: datetime) -> Subscription | None:
    """checkout.session.completed in subscription mode: the Stripe subscription is this user's.

    Creates the row when the subscription's own event has not arrived yet; that event then
    brings the status and periods. The session never changes state Stripe owns.
    """
    stripe_id = data.get("subscription")
    if data.get("mode") != "subscription" or not isinstance(stripe_id, str) or not stripe_id:
        return None
    metadata = dict(data.get("metadata") or {})
    if not metadata.get("user_id") and data.get("client_reference_id"):
        metadata["user_id"] = data["client_reference_id"]
    with transaction.atomic():
        sub = _lock_or_create(stripe_id, lambda: _new_row_fields(metadata, None))
        if str(sub.user_id) != str(metadata.get("user_id")):
            logger.error(
                "checkout session names another user than the subscription",
                extra={"subscription_id": sub.pk, "stripe_event_id": event_id},
            )
    return sub


# --- customer and staff operations: intent, Stripe, apply -----------------------------------------
# Stripe is never called with a transaction open or a row lock held (a slow Stripe would hold
# both for its whole timeout and retries): (1) under a short lock the request is checked and its
# intent recorded, with the idempotency key; (2) Stripe is called; (3) under a second short lock
# its answer is applied and the intent marked applied. A process that dies between (2) and (3)
# leaves the intent pending: the sweep sends it again under the same key (Stripe does it once)
# and applies it. Stripe's webhooks bring our row to Stripe's state whatever happens here.
STAFF_PERMISSION = "subscriptions.change_subscription"  # the finance group (and superusers)
Action = SubscriptionStripeCall.Action
CallStatus = SubscriptionStripeCall.Status

# Pending this long without a sender: the sweep sends it again (Stripe's answer never came, or
# never got applied).
SWEEP_AFTER = timedelta(minutes=1)
# Stripe remembers an idempotency key for 24 hours; past that a resend could make the change
# again, so the sweep gives up before (the webhooks have long since reconciled our row).
GIVE_UP_AFTER = timedelta(hours=23)


class StripeChangeInProgress(Conflict):
    code = "stripe_change_in_progress"


def _check_actor(subscription: Subscription, actor: Any) -> None:
    if actor.pk == subscription.user_id or can_act_for_any_user(actor) or actor.has_perm(STAFF_PERMISSION):
        return
    raise NotFound("No such subscription.")


def _cause_of(subscription: Subscription, actor: Any) -> tuple[str, Any]:
    if actor.is_staff or actor.pk != subscription.user_id:
        return Cause.STAFF, actor
    return Cause.API, None


def _key(subscription: Subscription, operation: str) -> str:
    """Same request on the same row state -> same key; any later change of the row -> a new one."""
    return f"subscription:{subscription.pk}:{operation}:{subscription.updated_at.timestamp():.6f}"


def _stripe_id(subscription: Subscription) -> str:
    if not subscription.stripe_subscription_id:
        raise Conflict("This subscription is not known to Stripe yet.", code="not_in_stripe")
    return subscription.stripe_subscription_id


def _audit(subscription: Subscription, cause: str, staff_user: Any, note: str) -> None:
    SubscriptionHistory.objects.create(
        subscription=subscription,
        from_status=subscription.status,
        to_status=subscription.status,
        cause=cause,
        staff_user=staff_user,
        note=note,
    )


def _in_flight_limit() -> timedelta:
    """Longer than one gateway call can last: every try's timeout plus the SDK's backoff between
    tries (at most 5 s), doubled. A sender's claim lasts this long."""
    tries = settings.STRIPE_MAX_NETWORK_RETRIES + 1
    return timedelta(seconds=2 * tries * (settings.STRIPE_TIMEOUT_SECONDS + 5))


def _unclaimed(now: datetime) -> Q:
    return Q(in_flight_until__isnull=True) | Q(in_flight_until__lt=now)


def _claim(calls: QuerySet[SubscriptionStripeCall], now: datetime) -> bool:
    """Take the intent for sending, if nobody holds it. One conditional UPDATE: of two processes
    racing for it (a retry and the sweep), exactly one gets it."""
    return bool(
        calls.filter(_unclaimed(now)).update(
            status=CallStatus.PENDING,
            in_flight_until=now + _in_flight_limit(),
            attempts=F("attempts") + 1,
            updated_at=now,
        )
    )


def _call_record(
    *,
    subscription: Subscription,
    action: str,
    key: str,
    stripe_params: dict[str, Any],
    params: dict[str, Any],
    cause: str,
    staff_user: Any,
) -> SubscriptionStripeCall:
    """The intent of `key`, claimed for sending by this process. The caller holds the row's lock.

    The same request again (same row state, so the same key) reuses its intent and its body:
    never two bodies under one key. Another change while one is pending is refused until it is
    done, so that Stripe and our row see changes in one order.
    """
    _stripe_id(subscription)
    now = timezone.now()
    others = SubscriptionStripeCall.objects.filter(subscription=subscription, status=CallStatus.PENDING)
    if others.exclude(idempotency_key=key).exists():
        raise StripeChangeInProgress(
            "Another change of this subscription is still being sent to Stripe; try again shortly.",
            headers={"Retry-After": "5"},
        )
    call, created = SubscriptionStripeCall.objects.get_or_create(
        idempotency_key=key,
        defaults={
            "subscription": subscription,
            "action": action,
            "stripe_params": stripe_params,
            "params": params,
            "cause": cause,
            "staff_user": staff_user,
            "attempts": 1,
            "in_flight_until": now + _in_flight_limit(),
        },
    )
    if created or call.status == CallStatus.APPLIED:
        return call
    # Pending (Stripe did not answer) or failed (Stripe refused, and replays that answer to this
    # key): sent again as first recorded, unless another process (the sweep) is sending it now.
    if not _claim(SubscriptionStripeCall.objects.filter(pk=call.pk).exclude(status=CallStatus.APPLIED), now):
        raise StripeChangeInProgress(
            "This change is already being sent to Stripe; try again shortly.", headers={"Retry-After": "5"}
        )
    call.refresh_from_db()
    return call


def _call_send(call: SubscriptionStripeCall) -> Subscription:
    """Send a claimed intent to Stripe and apply the answer. Never inside a transaction."""
    if call.status == CallStatus.APPLIED:
        return Subscription.objects.select_related("plan").get(pk=call.subscription_id)
    gw = stripe_gateway.client()
    send = gw.v1.subscriptions.cancel if call.action == Action.CANCEL_NOW else gw.v1.subscriptions.update
    pending = SubscriptionStripeCall.objects.filter(pk=call.pk, status=CallStatus.PENDING)
    try:
        stripe_gateway.call(
            send,
            _stripe_id(call.subscription),
            call.stripe_params,
            {"idempotency_key": call.idempotency_key},
        )
    except stripe_gateway.StripeUnavailable as exc:
        # Maybe done at Stripe, maybe not: pending, free for the user's retry or the sweep.
        pending.update(in_flight_until=None, error=exc.message, updated_at=timezone.now())
        raise
    except DomainError as exc:
        if isinstance(exc.__cause__, stripe.IdempotencyError):
            # Stripe is still busy with this key for a sender whose claim had expired.
            pending.update(in_flight_until=None, error=exc.message, updated_at=timezone.now())
            raise StripeChangeInProgress(
                "This change is already being sent to Stripe; try again shortly.",
                headers={"Retry-After": "5"},
            ) from exc
        # Stripe refused it for sure: it never happened.
        pending.update(
            status=CallStatus.FAILED,
            in_flight_until=None,
            error=f"{exc.code}: {exc.message}",
            updated_at=timezone.now(),
        )
        raise
    return _call_apply(call)


def _call_apply(call: SubscriptionStripeCall) -> Subscription:
    """Stripe agreed: make our row say the same, once (a second apply of the intent changes nothing)."""
    with transaction.atomic():
        sub = _lock(call.subscription)
        applied = SubscriptionStripeCall.objects.filter(pk=call.pk, status=CallStatus.PENDING).update(
            status=CallStatus.APPLIED, in_flight_until=None, error="", updated_at=timezone.now()
        )
        if applied:
            to_send = _APPLY[call.action](sub, call)
            if call.staff_user_id is not None:
                audit_record(
                    actor=call.staff_user,
                    action=f"subscription.{call.action}",
                    target=sub,
                    subject_user_id=sub.user_id,
                    reason=str(call.params.get("note", "")),
                    data={"idempotency_key": call.idempotency_key},
                )
            # A new row state, so a new key: the next request is never mistaken for this one.
            sub.save(update_fields=["updated_at"])
            _send(sub, to_send)
    return sub


# Each applier re-checks the row: Stripe's own event may have arrived first (e.g. the
# subscription is already cancelled), and the history keeps who asked for what.
def _apply_cancel_now(sub: Subscription, call: SubscriptionStripeCall) -> list[Signal]:
    if sub.status in ENDED:
        return []
    return _transition_locked(
        subscription=sub,
        to_status=Status.CANCELLED,
        cause=call.cause,
        staff_user=call.staff_user,
        note="cancelled immediately",
    )


def _apply_cancel_at_period_end(sub: Subscription, call: SubscriptionStripeCall) -> list[Signal]:
    if sub.status not in ENDED and not sub.cancel_at_period_end:  # else Stripe's event set it first
        sub.cancel_at_period_end = True
        sub.save(update_fields=["cancel_at_period_end", "updated_at"])
        events.subscription_cancel_flag_record(sub, actor=call.staff_user or sub.user)
    _audit(sub, call.cause, call.staff_user, "cancel at period end requested")
    return []


def _apply_resume(sub: Subscription, call: SubscriptionStripeCall) -> list[Signal]:
    if sub.status not in ENDED and sub.cancel_at_period_end:  # else Stripe's event cleared it first
        sub.cancel_at_period_end = False
        sub.save(update_fields=["cancel_at_period_end", "updated_at"])
        events.subscription_cancel_flag_record(sub, actor=call.staff_user or sub.user)
    _audit(sub, call.cause, call.staff_user, "pending cancellation undone")
    return []


def _apply_change_plan(sub: Subscription, call: SubscriptionStripeCall) -> list[Signal]:
    previous_plan = sub.plan
    plan = Plan.objects.get(pk=call.params["plan_id"])
    if sub.status not in ENDED:
        sub.plan, sub.currency, sub.amount = plan, call.params["currency"], call.params["amount"]
        sub.save(update_fields=["plan", "currency", "amount", "updated_at"])
    _audit(sub, call.cause, call.staff_user, f"plan changed from {call.params['from_plan']} to {plan.code}")
    if sub.status not in ENDED and previous_plan.pk != plan.pk:  # else Stripe's event announced it
        events.subscription_plan_changed_record(
            sub, from_plan_code=previous_plan.code, actor=call.staff_user or sub.user
        )
        signals.subscription_plan_changed.send(
            sender=Subscription, subscription=sub, previous_plan=previous_plan
        )
    return []


def _apply_extend_period(sub: Subscription, call: SubscriptionStripeCall) -> list[Signal]:
    new_end = datetime.fromtimestamp(call.params["period_end"], tz=UTC)
    if sub.status not in ENDED and (sub.current_period_end is None or sub.current_period_end < new_end):
        sub.current_period_end = new_end
        sub.save(update_fields=["current_period_end", "updated_at"])
    _audit(sub, call.cause, call.staff_user, call.params["note"])
    return _announce_period(sub, [])


def _apply_sync_metered_items(sub: Subscription, call: SubscriptionStripeCall) -> list[Signal]:
    _audit(sub, call.cause, call.staff_user, call.params["note"])
    return []


_APPLY: dict[str, Callable[[Subscription, SubscriptionStripeCall], list[Signal]]] = {
    Action.CANCEL_NOW: _apply_cancel_now,
    Action.CANCEL_AT_PERIOD_END: _apply_cancel_at_period_end,
    Action.RESUME: _apply_resume,
    Action.CHANGE_PLAN: _apply_change_plan,
    Action.EXTEND_PERIOD: _apply_extend_period,
    Action.SYNC_METERED_ITEMS: _apply_sync_metered_items,
}


def subscription_cancel(*, subscription: Subscription, actor: Any, immediately: bool = False) -> Subscription:
    """Cancel at the period end (Stripe keeps billing until then), or now (staff only; and anyone's
    cancellation of a subscription whose renewal is unpaid)."""

    if immediately and not actor.has_perm(STAFF_PERMISSION):
        raise DomainError("Only finance staff may cancel immediately.", code="forbidden", status_code=403)
    _check_actor(subscription, actor)
    call = None
    with transaction.atomic():
        sub = _lock(subscription)
        if sub.status in ENDED:
            raise Conflict("This subscription has already ended.", code="subscription_ended")
        cause, staff = _cause_of(sub, actor)
        # Unpaid (a renewal failed, dunning runs): the period ahead was never paid for, so a
        # cancellation ends it now. At the period end instead, the customer would keep access to
        # an unpaid period, its invoice voided, and could resume without ever paying it.
        immediately = immediately or sub.status in RENEWAL_UNPAID
        if immediately:
            call = _call_record(
                subscription=sub,
                action=Action.CANCEL_NOW,
                key=_key(sub, "cancel"),
                stripe_params={},
                params={},
                cause=cause,
                staff_user=staff,
            )
        elif not sub.cancel_at_period_end:
            call = _call_record(
                subscription=sub,
                action=Action.CANCEL_AT_PERIOD_END,
                key=_key(sub, "cancel-at-period-end"),
                stripe_params={"cancel_at_period_end": True},
                params={},
                cause=cause,
                staff_user=staff,
            )
    if call is not None:
        sub = _call_send(call)
    # Cancelling stops dunning at once (its receiver): no retry after it, the unpaid invoice voided.
    signals.subscription_cancel_requested.send(sender=Subscription, subscription=sub, actor=actor)
    _refresh_from(subscription, sub)
    return subscription


def subscription_resume(*, subscription: Subscription, actor: Any) -> Subscription:
    """Undo a pending cancellation at the period end."""
    _check_actor(subscription, actor)
    with transaction.atomic():
        sub = _lock(subscription)
        if sub.status in ENDED or not sub.cancel_at_period_end:
            raise Conflict("This subscription has no pending cancellation.", code="not_pending_cancel")
        cause, staff = _cause_of(sub, actor)
        call = _call_record(
            subscription=sub,
            action=Action.RESUME,
            key=_key(sub, "resume"),
            stripe_params={"cancel_at_period_end": False},
            params={},
            cause=cause,
            staff_user=staff,
        )
    _refresh_from(subscription, _call_send(call))
    return subscription


def _plan_change_check(*, subscription: Subscription, plan: Plan) -> tuple[Quote, StripePrice]:
    """What `plan` costs the subscription and its Stripe price, or why it cannot move there.

    A plan whose price in the subscription's zone is 0 is not sold by subscription: checkout
    refuses it with the same code, so a free plan is reached by neither door.
    """
    if subscription.status in ENDED:
        raise Conflict("This subscription has already ended.", code="subscription_ended")
    if plan.pk == subscription.plan_id:
        raise Conflict("The subscription is already on this plan.", code="same_plan")
    if not plan.active or plan.interval == Plan.Interval.ONE_TIME:
        raise DomainError("This plan cannot be subscribed to.", code="plan_unavailable")
    zone = subscription.pricing_zone
    quote = plan_quote(plan=plan, zone=zone)
    if quote is None:
        raise DomainError("This plan is not sold in the subscription's zone.", code="plan_unavailable")
    if quote.amount == 0:
        raise DomainError(
            f"Plan {plan.code!r} is not sold in {zone.code if zone else 'the default zone'}.",
            code="not_for_sale",
        )
    price = stripe_price_find(plan=plan, currency=quote.currency, amount=quote.amount)
    if price is None:
        raise Conflict(
            f"Plan {plan.code} has no Stripe price for {quote.amount} {quote.currency} yet.",
            code="stripe_price_missing",
        )
    return quote, price


def _plan_change_items(
    *, remote: Mapping[str, Any], price: StripePrice, metered: list[MeteredPrice]
) -> list[dict[str, Any]]:
    """Stripe's `items[]` moving a subscription to another plan: the licensed item takes the new
    plan's price (one item, so Stripe prorates it); the old plan's metered items are deleted and
    the new plan's metered prices added, so that usage is billed at the new plan's rates from now on.

    No `clear_usage`: Stripe ignores it for prices on a Billing Meter, whose usage lives on the
    meter (our ledger, reconciled against the meter's summaries, keeps it whatever Stripe bills).
    """
    licensed = _licensed_item(remote)
    if not licensed.get("id"):
        raise Conflict(
            "Stripe lists no item for this subscription.", code="stripe_subscription_without_items"
        )
    return [{"id": licensed["id"], "price": price.stripe_price_id}, *_metered_items_changes(remote, metered)]


def _metered_items_changes(remote: Mapping[str, Any], metered: list[MeteredPrice]) -> list[dict[str, Any]]:
    """The `items[]` entries that leave a subscription with exactly these metered prices: the
    other metered items deleted, the missing prices added (the licensed item untouched)."""
    items = list((remote.get("items") or {}).get("data") or [])
    licensed = _licensed_item(remote)
    metered_now = _metered_price_ids(items)
    wanted = [row.stripe_price_id for row in metered if row.stripe_price_id]
    changes: list[dict[str, Any]] = []
    kept: set[str] = set()
    for item in items:
        price_id = _price_id_of(item)
        if item.get("id") == licensed.get("id") or price_id not in metered_now:
            continue
        if price_id in wanted:
            kept.add(price_id)
        else:
            changes.append({"id": item["id"], "deleted": True})
    changes.extend({"price": price_id} for price_id in wanted if price_id not in kept)
    return changes


def subscription_change_plan(*, subscription: Subscription, plan: Plan, actor: Any) -> Subscription:
    """Move to `plan` at its price in the subscription's zone, prorated by Stripe, with the new
    plan's metered prices in place of the old plan's."""
    _check_actor(subscription, actor)
    quote, _ = _plan_change_check(subscription=subscription, plan=plan)  # refused before any Stripe call
    in_flight = SubscriptionStripeCall.objects.filter(
        subscription=subscription, status=CallStatus.PENDING, in_flight_until__gt=timezone.now()
    )
    # Refused before reading the items: the gateway makes one Stripe call at a time per process
    # (its breaker's lock), so that read would wait for the call in flight.
    if in_flight.exists():
        raise StripeChangeInProgress(
            "A change of this subscription is being sent to Stripe; try again shortly.",
            headers={"Retry-After": "5"},
        )
    # Pushed (when missing) before the row is locked: creating a Stripe price is a Stripe call.
    metered = plan_metered_prices_ensure(plan=plan, zone=subscription.pricing_zone, currency=quote.currency)
    remote = stripe_gateway.call(stripe_gateway.client().v1.subscriptions.retrieve, _stripe_id(subscription))
    remote_data = remote.to_dict()
    with transaction.atomic():
        sub = _lock(subscription)
        quote, price = _plan_change_check(subscription=sub, plan=plan)  # the row may have moved since
        cause, staff = _cause_of(sub, actor)
        call = _call_record(
            subscription=sub,
            action=Action.CHANGE_PLAN,
            key=_key(sub, f"plan:{plan.code}"),
            stripe_params={
                "items": _plan_change_items(remote=remote_data, price=price, metered=metered),
                "proration_behavior": "create_prorations",
                "metadata": {"plan_code": plan.code},
            },
            params={
                "plan_id": plan.pk,
                "currency": quote.currency,
                "amount": quote.amount,
                "from_plan": sub.plan.code,
            },
            cause=cause,
            staff_user=staff,
        )
    _refresh_from(subscription, _call_send(call))
    return subscription


def subscription_metered_items_sync(*, subscription: Subscription, staff_user: Any) -> bool:
    """Give a live subscription the metered items its plan bills now in its zone: the items of
    prices the plan dropped are deleted, those it added (a feature priced by usage after the
    subscription began) are added; the plan's own item is left as it is. Nothing is prorated: a
    metered item bills the usage of its own period. False when Stripe already agrees (no call)."""
    if not staff_user.has_perm(STAFF_PERMISSION):
        raise DomainError(
            "Only finance staff may sync a subscription's items.", code="forbidden", status_code=403
        )
    if subscription.status not in GIVES_ACCESS:
        raise Conflict("Only a live subscription bills usage.", code="not_live")
    # Pushed (when missing) and read before the row is locked: both are Stripe calls.
    metered = plan_metered_prices_ensure(
        plan=subscription.plan, zone=subscription.pricing_zone, currency=subscription.currency
    )
    remote = stripe_gateway.call(stripe_gateway.client().v1.subscriptions.retrieve, _stripe_id(subscription))
    remote_data = remote.to_dict()
    changes = _metered_items_changes(remote_data, metered)
    if not changes:
        return False
    added = sum(1 for change in changes if "price" in change)
    removed = len(changes) - added
    with transaction.atomic():
        sub = _lock(subscription)
        if sub.status not in GIVES_ACCESS:
            raise Conflict("Only a live subscription bills usage.", code="not_live")
        call = _call_record(
            subscription=sub,
            action=Action.SYNC_METERED_ITEMS,
            key=_key(sub, "metered-items"),
            stripe_params={"items": changes, "proration_behavior": "none"},
            params={
                "note": f"metered items synced with plan {sub.plan.code}: {added} added, {removed} removed"
            },
            cause=Cause.STAFF,
            staff_user=staff_user,
        )
    _refresh_from(subscription, _call_send(call))
    return True


def subscription_extend_period(
    *, subscription: Subscription, days: int, staff_user: Any, note: str
) -> Subscription:
    """Support goodwill: push the next charge `days` later (in Stripe: a trial until then)."""
    if not staff_user.has_perm(STAFF_PERMISSION):
        raise DomainError("Only finance staff may extend a period.", code="forbidden", status_code=403)
    if days < 1:
        raise DomainError("Extend by at least one day.", code="invalid_days")
    with transaction.atomic():
        sub = _lock(subscription)
        if sub.status not in GIVES_ACCESS or sub.current_period_end is None:
            raise Conflict("Only a live subscription with a period can be extended.", code="not_live")
        new_end = int((sub.current_period_end + timedelta(days=days)).timestamp())
        call = _call_record(
            subscription=sub,
            action=Action.EXTEND_PERIOD,
            key=_key(sub, f"extend:{new_end}"),
            stripe_params={"trial_end": new_end, "proration_behavior": "none"},
            params={"period_end": new_end, "note": f"period extended by {days} days: {note}".strip()},
            cause=Cause.STAFF,
            staff_user=staff_user,
        )
    _refresh_from(subscription, _call_send(call))
    return subscription


# --- the sweep --------------------------------------------------------------------------------------
def subscription_stripe_call_retry(*, call_id: int) -> Subscription | None:
    """Send a pending change again under its key and apply it; None when another process has it."""
    if not _claim(
        SubscriptionStripeCall.objects.filter(pk=call_id, status=CallStatus.PENDING), timezone.now()
    ):
        return None
    return _call_send(
        SubscriptionStripeCall.objects.select_related("subscription", "staff_user").get(pk=call_id)
    )


def subscription_stripe_calls_sweep() -> int:
    """Beat job: finish the changes left pending (Stripe did not answer, or the process died
    before applying its answer). Returns how many were applied."""
    now = timezone.now()
    pending = SubscriptionStripeCall.objects.filter(status=CallStatus.PENDING).filter(_unclaimed(now))
    given_up = pending.filter(created_at__lt=now - GIVE_UP_AFTER).update(
        status=CallStatus.FAILED, error="given up: Stripe never confirmed it", updated_at=now
    )
    if given_up:
        logger.error("gave up %s subscription change(s) Stripe never confirmed", given_up)
    ids = list(pending.filter(updated_at__lt=now - SWEEP_AFTER).values_list("pk", flat=True)[:200])
    done = 0
    for pk in ids:
        try:
            done += subscription_stripe_call_retry(call_id=pk) is not None
        except DomainError as exc:
            logger.warning(
                "subscription change %s still not sent: %s", pk, exc.message, extra={"call_id": pk}
            )
    return done


# --- duplicates: Stripe's side ----------------------------------------------------------------------


def _invoice_payment_intent(invoice: Mapping[str, Any]) -> str:
    """The PaymentIntent that paid an invoice: `payment_intent` on API versions before
    2025-03-31, else the invoice's first payment (read with `expand=["payments"]`)."""
    direct = invoice.get("payment_intent")
    if direct:
        return str(direct if isinstance(direct, str) else direct.get("id"))
    payments = (invoice.get("payments") or {}).get("data") or []
    for payment in payments:
        intent = (payment.get("payment") or {}).get("payment_intent")
        if intent:
            return str(intent if isinstance(intent, str) else intent.get("id"))
    return ""


def subscription_duplicate_settle(*, subscription_id: int) -> bool:
    """A duplicate's Stripe side: cancelled there now (Stripe ends a trial with no charge) and what
    its invoices charged refunded, with keys derived from our row, so a retry never refunds twice;
    then recorded on its history and in the audit log. True once settled (now or before)."""
    sub = Subscription.objects.filter(pk=subscription_id, duplicate_of__isnull=False).first()
    if sub is None or sub.duplicate_settled_at is not None:
        return sub is not None
    stripe_id = _stripe_id(sub)
    gw = stripe_gateway.client()
    remote = stripe_gateway.call(gw.v1.subscriptions.retrieve, stripe_id)
    if remote["status"] != "canceled":
        stripe_gateway.call(
            gw.v1.subscriptions.cancel, stripe_id, {}, {"idempotency_key": f"subscription:{sub.pk}:duplicate"}
        )
    refunded: list[str] = []
    for listed in stripe_gateway.call(gw.v1.invoices.list, {"subscription": stripe_id, "limit": 100}).data:
        invoice = listed.to_dict()
        if not invoice.get("amount_paid"):
            continue
        if not _invoice_payment_intent(invoice):
            invoice = stripe_gateway.call(
                gw.v1.invoices.retrieve, invoice["id"], {"expand": ["payments"]}
            ).to_dict()
        intent = _invoice_payment_intent(invoice)
        if not intent:
            continue
        stripe_gateway.call(
            gw.v1.refunds.create,
            {"payment_intent": intent, "reason": "duplicate"},
            {"idempotency_key": f"subscription:{sub.pk}:duplicate-refund:{invoice['id']}"},
        )
        refunded.append(format_money(int(invoice["amount_paid"]), str(invoice["currency"]).upper()))
    note = "Duplicate cancelled at Stripe; " + (
        f"refunded {', '.join(refunded)}." if refunded else "nothing had been charged (trial or unpaid)."
    )
    with transaction.atomic():
        settled = Subscription.objects.filter(pk=sub.pk, duplicate_settled_at__isnull=True).update(
            duplicate_settled_at=timezone.now()
        )
        if settled:
            _audit(sub, Cause.WEBHOOK, None, note)
            audit_record(
                actor=None,
                action="subscription.duplicate_settled",
                target=sub,
                subject_user_id=sub.user_id,
                reason=note,
                data={"refunded": refunded},
            )
    return True


# A duplicate not settled this long after it was found: its task was lost or Stripe was down.
DUPLICATE_SETTLE_AFTER = timedelta(minutes=2)


def subscription_duplicates_settle_sweep() -> int:
    """Beat job: queue the settling of duplicates still waiting; the number queued."""
    ids = list(
        Subscription.objects.filter(
            duplicate_of__isnull=False,
            duplicate_settled_at__isnull=True,
            updated_at__lt=timezone.now() - DUPLICATE_SETTLE_AFTER,
        ).values_list("pk", flat=True)[:500]
    )
    for pk in ids:
        _publish_duplicate_settle(pk)
    return len(ids)


# --- periods that ended without a word from Stripe ------------------------------------------------


def subscriptions_overdue(*, now: datetime | None = None) -> list[int]:
    """Subscriptions whose period ended more than SUBSCRIPTIONS_RECONCILE_GRACE_SECONDS ago with
    nothing from Stripe since (a missed or delayed webhook), either still active or suspended by
    this job for it: their ids, the active ones first, then oldest period first."""
    now = now or timezone.now()
    grace = timedelta(seconds=settings.SUBSCRIPTIONS_RECONCILE_GRACE_SECONDS)
    return list(
        Subscription.objects.filter(stripe_subscription_id__isnull=False, current_period_end__lt=now - grace)
        .filter(Q(stripe_state_at__isnull=True) | Q(stripe_state_at__lt=F("current_period_end")))
        .annotate(hold=Subquery(_latest_suspension_cause(OuterRef("pk"))))
        .filter(Q(status__in=GIVES_ACCESS) | Q(status=Status.SUSPENDED, hold=Cause.SCHEDULE))
        # Those still active first: held ones that keep failing never keep new ones from the batch.
        .order_by(Case(When(status__in=GIVES_ACCESS, then=0), default=1), "current_period_end")
        .values_list("pk", flat=True)[:RECONCILE_BATCH]
    )


def _latest_suspension_cause(subscription: Any) -> QuerySet[SubscriptionHistory, Any]:
    """The cause of the subscription's latest move into suspended (SCHEDULE: this job's hold;
    staff or dunning: theirs, which the job leaves alone). `subscription`: a row, or
    OuterRef("pk") inside a query over subscriptions."""
    return (
        SubscriptionHistory.objects.filter(subscription=subscription, to_status=Status.SUSPENDED)
        .order_by("-created_at", "-pk")
        .values_list("cause", flat=True)[:1]
    )


def _held_by_reconcile(subscription: Subscription) -> bool:
    return subscription.status == Status.SUSPENDED and list(_latest_suspension_cause(subscription)) == [
        Cause.SCHEDULE
    ]


def _reconcile_hold_release(subscription: Subscription, *, cause: str, event_id: str) -> None:
    """Stripe has spoken about a subscription the reconcile job suspended for want of its word:
    the hold is lifted first (active again, its entitlements restored), so that what Stripe says
    applies as it would have to the active row (past_due gives the dunning policy's access,
    cancelled revokes). The caller holds the row's lock."""
    if not _held_by_reconcile(subscription):
        return
    _send(
        subscription,
        _transition_locked(
            subscription=subscription,
            to_status=Status.ACTIVE,
            cause=cause,
            stripe_event_id=event_id,
            note="Stripe answered: the reconcile job's suspension is lifted.",
        ),
    )


RECONCILE_BATCH = 200


def subscription_reconcile(*, subscription_id: int) -> Subscription:
    """Ask Stripe for the subscription's current state and apply it (outside any transaction).

    A subscription Stripe no longer knows is cancelled here, with that reason on its history.
    """
    sub = Subscription.objects.get(pk=subscription_id)
    stripe_id = _stripe_id(sub)
    read_at = timezone.now()
    try:
        remote = stripe_gateway.call(stripe_gateway.client().v1.subscriptions.retrieve, stripe_id)
    except DomainError as exc:
        if exc.code != "stripe_invalid_request":
            raise
        return subscription_transition(
            subscription=sub,
            to_status=Status.CANCELLED,
            cause=Cause.SCHEDULE,
            note=f"Stripe no longer knows {stripe_id} ({exc.message}); cancelled by the reconcile job.",
        )
    return subscription_sync_from_stripe(
        data=remote.to_dict(), event_id="", event_created=read_at, cause=Cause.SCHEDULE
    )


def subscription_suspend_unconfirmed(
    *, subscription_id: int, reason: str, now: datetime | None = None
) -> bool:
    """Suspend a subscription still active past its period end and the grace with nothing from
    Stripe, because Stripe could not be asked (`reason`); True if it was suspended now.

    Its access already stopped at the period end (expiry is checked on every read): this makes
    its status say so too. The job keeps asking Stripe, and Stripe's answer moves it on (active
    again with the new period, or cancelled). Checked again under the row lock, so a webhook that
    confirmed the renewal meanwhile wins."""
    now = now or timezone.now()
    grace = timedelta(seconds=settings.SUBSCRIPTIONS_RECONCILE_GRACE_SECONDS)
    with transaction.atomic():
        sub = Subscription.objects.select_for_update().select_related("plan").get(pk=subscription_id)
        end, heard = sub.current_period_end, sub.stripe_state_at
        if sub.status not in GIVES_ACCESS or end is None or end >= now - grace:
            return False
        if heard is not None and heard >= end:
            return False
        to_send = _transition_locked(
            subscription=sub,
            to_status=Status.SUSPENDED,
            cause=Cause.SCHEDULE,
            note=(
                f"The period ended {end:%Y-%m-%d %H:%M} UTC and Stripe has not confirmed what came "
                f"next; asking it failed ({reason[:200]}). Suspended until Stripe answers."
            ),
        )
        _send(sub, to_send)
    return True


def subscriptions_reconcile_overdue() -> int:
    """Beat job: reconcile every overdue subscription with Stripe; the number reconciled.

    One Stripe cannot confirm (down, or an error) is suspended and asked again on the next run,
    so none stays active past its period end plus the grace without Stripe's word."""
    done = 0
    for pk in subscriptions_overdue():
        try:
            subscription_reconcile(subscription_id=pk)
        except DomainError as exc:
            # Stripe down opens the breaker after a few failures: the rest then fail at once.
            logger.warning("could not reconcile subscription %s: %s", pk, exc.message)
            subscription_suspend_unconfirmed(subscription_id=pk, reason=exc.message)
            continue
        done += 1
    return done
