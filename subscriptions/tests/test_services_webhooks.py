"""Stripe's webhooks applied through the services: in order, duplicated, shuffled (shapes trimmed
from Stripe's fixtures3.json: subscription, invoice, checkout.session)."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from billing.catalog.tests.factories import PlanFactory
from payments_project.accounts.tests.factories import UserFactory
from payments_project.events.models import DomainEvent
from payments_project.events.services import Actor, actor_bound
from subscriptions import services
from subscriptions.models import Subscription, SubscriptionHistory

DAY = 86400
T0 = 1_800_000_000
P0, P1, P2, P3 = T0, T0 + 30 * DAY, T0 + 60 * DAY, T0 + 90 * DAY
SUB_ID = "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw"


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def price(plan_code: str) -> dict[str, Any]:
    return {
        "id": f"price_{plan_code}",
        "object": "price",
        "currency": "usd",
        "unit_amount": 2000,
        "lookup_key": None,
        "metadata": {"plan_code": plan_code},
        "recurring": {"interval": "month", "interval_count": 1},
        "type": "recurring",
    }


def subscription_obj(
    meta: dict[str, str], status: str, start: int, end: int, *, on_item: bool = True, **extra: Any
) -> dict[str, Any]:
    item: dict[str, Any] = {"id": "si_QXhVnC2h0Jczwc", "object": "subscription_item", "price": price("pro")}
    obj: dict[str, Any] = {
        "id": SUB_ID,
        "object": "subscription",
        "customer": "cus_QXg1o8vcGmoR32",
        "status": status,
        "metadata": meta,
        "items": {"object": "list", "data": [item]},
        "cancel_at_period_end": False,
        "canceled_at": None,
        "trial_end": None,
    }
    # Newer API versions carry the period on the item, older ones on the subscription.
    (item if on_item else obj).update({"current_period_start": start, "current_period_end": end})
    obj.update(extra)
    return obj


def invoice_obj(meta: dict[str, str], start: int, end: int, paid: int = 2000) -> dict[str, Any]:
    return {
        "id": f"in_{start}",
        "object": "invoice",
        "amount_paid": paid,
        "currency": "usd",
        "subscription": None,
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"metadata": meta, "subscription": SUB_ID},
        },
        "lines": {
            "object": "list",
            "data": [
                {
                    "id": f"il_{start}",
                    "object": "line_item",
                    "period": {"start": start, "end": end},
                    "pricing": {"price_details": {"price": "price_pro"}},
                    "parent": {
                        "type": "subscription_item_details",
                        "subscription_item_details": {"proration": False, "subscription": SUB_ID},
                    },
                }
            ],
        },
    }


def checkout_obj(meta: dict[str, str]) -> dict[str, Any]:
    return {
        "id": "cs_test_a1YS1URlnyQCN5fUUduORoQ7Pw41PJqDWkIVQCpJPqkfIhd6tVY8XB1OLY",
        "object": "checkout.session",
        "mode": "subscription",
        "status": "complete",
        "payment_status": "paid",
        "subscription": SUB_ID,
        "client_reference_id": meta["user_id"],
        "metadata": meta,
    }


Event = tuple[str, str, int, dict[str, Any]]  # (kind, id, created, object)
APPLY: dict[str, Callable[..., Any]] = {
    "sub": services.subscription_sync_from_stripe,
    "paid": services.subscription_apply_invoice_paid,
    "failed": services.subscription_apply_invoice_failed,
    "checkout": services.subscription_from_checkout,
}


def apply(events: list[Event]) -> None:
    for kind, event_id, created, obj in events:
        APPLY[kind](data=obj, event_id=event_id, event_created=at(created))


def life_until_recovery(meta: dict[str, str]) -> list[Event]:
    """created -> first invoice paid -> renewal -> payment failed -> recovered."""
    return [
        ("sub", "evt_1", P0, subscription_obj(meta, "active", P0, P1)),
        ("paid", "evt_2", P0 + 1, invoice_obj(meta, P0, P1)),
        ("paid", "evt_3", P1 + 1, invoice_obj(meta, P1, P2)),
        ("sub", "evt_4", P1 + 2, subscription_obj(meta, "active", P1, P2, on_item=False)),
        ("failed", "evt_5", P2 + 1, invoice_obj(meta, P2, P3, paid=0)),
        ("sub", "evt_6", P2 + 2, subscription_obj(meta, "past_due", P2, P3)),
        ("paid", "evt_7", P2 + 100, invoice_obj(meta, P2, P3)),
    ]


def full_life(meta: dict[str, str]) -> list[Event]:
    """... then cancel at period end, then deleted at the period end."""
    return [
        *life_until_recovery(meta),
        ("sub", "evt_8", P2 + 101, subscription_obj(meta, "active", P2, P3, cancel_at_period_end=True)),
        (
            "sub",
            "evt_9",
            P3,
            subscription_obj(meta, "canceled", P2, P3, cancel_at_period_end=True, canceled_at=P3),
        ),
    ]


def net_effect(sent: list[tuple[str, Any]]) -> tuple[str | None, datetime | None]:
    """What a receiver keeping (access, expires_at) would end with."""
    access, until = None, None
    for name, kwargs in sent:
        sub = kwargs["subscription"]
        if name == "activated":
            access, until = "granted", sub.current_period_end
        elif name == "renewed":
            until = sub.current_period_end
        elif name == "suspended":
            access = "suspended"
        elif name == "reactivated":
            access = "granted"
        elif name == "cancelled":
            access = "revoked"
    return access, until


def row_state(sub: Subscription) -> tuple[Any, ...]:
    return (
        sub.stripe_subscription_id,
        sub.user_id,
        sub.plan_id,
        sub.status,
        sub.current_period_start,
        sub.current_period_end,
        sub.cancel_at_period_end,
        sub.cancelled_at,
        sub.currency,
        sub.amount,
    )


@pytest.fixture
def meta(db) -> dict[str, str]:
    user = UserFactory()
    PlanFactory(code="pro")
    return {"user_id": str(user.pk), "plan_code": "pro"}


def test_life_in_order_ends_active_through_the_recovered_period(meta, sent) -> None:
    # given a real life up to a recovered payment / when applied in order
    apply(life_until_recovery(meta))
    # then the row, the timeline and the signals tell that life
    sub = Subscription.objects.get()
    assert (sub.status, sub.current_period_start, sub.current_period_end) == ("active", at(P2), at(P3))
    assert (sub.currency, sub.amount, sub.plan.code) == ("USD", 2000, "pro")
    assert sub.stripe_state_at == at(P2 + 100)
    assert list(sub.history.values_list("from_status", "to_status", "stripe_event_id")) == [
        ("incomplete", "active", "evt_1"),
        ("active", "past_due", "evt_5"),
        ("past_due", "active", "evt_7"),
    ]
    assert sent.names() == ["activated", "renewed", "suspended", "reactivated", "renewed"]
    assert net_effect(sent) == ("granted", at(P3))


def test_full_life_in_order_ends_cancelled(meta, sent) -> None:
    # given a life that ends with a cancellation at period end / when applied in order
    apply(full_life(meta))
    # then cancelled at the period end, access revoked
    sub = Subscription.objects.get()
    assert row_state(sub)[3:8] == ("cancelled", at(P2), at(P3), True, at(P3))
    assert list(sub.history.values_list("from_status", "to_status")) == [
        ("incomplete", "active"),
        ("active", "past_due"),
        ("past_due", "active"),
        ("active", "cancelled"),
    ]
    assert sent.names()[-1] == "cancelled"
    assert net_effect(sent) == ("revoked", at(P3))


@pytest.mark.parametrize("life", [life_until_recovery, full_life])
def test_every_event_delivered_twice_changes_nothing_more(meta, sent, life) -> None:
    # given the same life applied once, in order
    apply(life(meta))
    once = (row_state(Subscription.objects.get()), sent.names(), SubscriptionHistory.objects.count())
    Subscription.objects.all().delete()
    sent.clear()
    # when each event is delivered twice in a row
    apply([event for event in life(meta) for _ in (1, 2)])
    # then the same row, the same history length and the same signals
    twice = (row_state(Subscription.objects.get()), sent.names(), SubscriptionHistory.objects.count())
    assert twice == once


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6, 7, 8, "reversed"])
@pytest.mark.parametrize(
    ("life", "expected_status", "expected_effect"),
    [
        (life_until_recovery, "active", ("granted", at(P3))),
        (full_life, "cancelled", ("revoked", None)),
    ],
)
def test_shuffled_deliveries_end_in_the_same_state(
    meta, sent, seed, life, expected_status, expected_effect
) -> None:
    # given a real life, delivered in a shuffled order with some duplicates
    events = life(meta)
    if seed == "reversed":
        events.reverse()
    else:
        rng = random.Random(seed)
        events += rng.sample(events, 3)
        rng.shuffle(events)
    # when applied
    apply(events)
    # then the same final row as in order, and the same net effect of the signals
    sub = Subscription.objects.get()
    assert (sub.status, sub.current_period_start, sub.current_period_end) == (
        expected_status,
        at(P2),
        at(P3),
    )
    assert sub.history.last().to_status == expected_status
    access, until = net_effect(sent)
    assert access == expected_effect[0]
    if expected_effect[1] is not None:
        assert until == expected_effect[1]


def test_older_event_after_newer_is_ignored(meta, sent) -> None:
    # given a subscription synced from an event at P2
    apply([("sub", "evt_new", P2, subscription_obj(meta, "past_due", P2, P3))])
    sent.clear()
    # when an older event (active, earlier period) arrives late
    apply([("sub", "evt_old", P1, subscription_obj(meta, "active", P1, P2))])
    # then nothing moves back and nothing is sent
    sub = Subscription.objects.get()
    assert (sub.status, sub.current_period_end, sub.stripe_state_at) == ("past_due", at(P3), at(P2))
    assert sent.names() == []


def test_plan_change_from_stripe_sends_plan_changed(meta, sent) -> None:
    # given an active subscription on "pro"
    apply([("sub", "evt_1", P0, subscription_obj(meta, "active", P0, P1))])
    PlanFactory(code="max")
    changed = subscription_obj(meta, "active", P0, P1)
    changed["items"]["data"][0]["price"] = price("max")
    sent.clear()
    # when Stripe says the item is now on max's price
    apply([("sub", "evt_2", P0 + 5, changed)])
    # then the plan follows and plan_changed names the previous plan
    sub = Subscription.objects.get()
    assert sub.plan.code == "max"
    assert [(name, kw.get("previous_plan").code) for name, kw in sent] == [("plan_changed", "pro")]


def test_trialing_zero_invoice_keeps_trialing(meta, sent) -> None:
    # given a trialing subscription
    apply([("sub", "evt_1", P0, subscription_obj(meta, "trialing", P0, P1, trial_end=P1))])
    # when its 0-amount first invoice is paid
    apply([("paid", "evt_2", P0 + 1, invoice_obj(meta, P0, P1, paid=0))])
    # then it stays trialing, activated once
    sub = Subscription.objects.get()
    assert (sub.status, sub.trial_end) == ("trialing", at(P1))
    assert sent.names() == ["activated"]


def test_checkout_before_or_after_created_gives_the_same_row(meta) -> None:
    # given the checkout completion and the subscription's creation
    created = ("sub", "evt_1", P0, subscription_obj(meta, "active", P0, P1))
    checkout = ("checkout", "evt_cs", P0 + 2, checkout_obj(meta))
    # when applied checkout first, then (fresh) created first
    apply([checkout, created])
    first = row_state(Subscription.objects.get())
    history_first = list(SubscriptionHistory.objects.values_list("from_status", "to_status"))
    Subscription.objects.all().delete()
    apply([created, checkout])
    # then the same row and the same timeline
    assert row_state(Subscription.objects.get()) == first
    assert list(SubscriptionHistory.objects.values_list("from_status", "to_status")) == history_first
    assert first[1:4] == (int(meta["user_id"]), Subscription.objects.get().plan_id, "active")


def test_checkout_alone_links_the_user_as_incomplete(meta, sent) -> None:
    # given only the checkout completion / when applied
    apply([("checkout", "evt_cs", P0, checkout_obj(meta))])
    # then a row for the user, waiting for Stripe's subscription event
    sub = Subscription.objects.get()
    assert (sub.stripe_subscription_id, str(sub.user_id), sub.status) == (
        SUB_ID,
        meta["user_id"],
        "incomplete",
    )
    assert sent.names() == []


def test_unknown_user_is_refused(meta) -> None:
    # given metadata naming no existing user / when synced / then refused, nothing written
    with pytest.raises(services.NotFound) as raised:
        apply(
            [
                (
                    "sub",
                    "evt_1",
                    P0,
                    subscription_obj({"user_id": "999999", "plan_code": "pro"}, "active", P0, P1),
                )
            ]
        )
    assert raised.value.code == "unknown_user"
    assert Subscription.objects.count() == 0


@pytest.mark.django_db
def test_an_old_periods_invoice_paid_late_does_not_lift_a_past_due_subscription() -> None:
    # given a past-due subscription whose current period started on 1 March
    from datetime import UTC, datetime

    from subscriptions.services import subscription_apply_invoice_paid
    from subscriptions.tests.factories import SubscriptionFactory

    march, april = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    sub = SubscriptionFactory(
        status="past_due",
        current_period_start=march,
        current_period_end=april,
        stripe_subscription_id="sub_late",
    )

    # when February's invoice is reported paid late
    february = {
        "id": "in_feb",
        "object": "invoice",
        "subscription": "sub_late",
        "amount_paid": 999,
        "lines": {
            "data": [
                {
                    "type": "subscription",
                    "period": {
                        "start": int(datetime(2026, 2, 1, tzinfo=UTC).timestamp()),
                        "end": int(march.timestamp()),
                    },
                }
            ]
        },
    }
    subscription_apply_invoice_paid(data=february, event_id="evt_feb", event_created=datetime.now(UTC))

    # then it stays past due with March's period
    sub.refresh_from_db()
    assert (sub.status, sub.current_period_start, sub.current_period_end) == ("past_due", march, april)


def _events(subscription_id: int) -> list[tuple[str, int, str, str]]:
    return list(
        DomainEvent.objects.filter(aggregate_type="subscription", aggregate_id=str(subscription_id))
        .order_by("sequence")
        .values_list("type", "sequence", "actor_type", "actor_id")
    )


def test_stripes_events_record_domain_events_once_each(meta) -> None:
    # given Stripe's life of a subscription: created active, cancellation scheduled and undone at
    # Stripe (dashboard), then cancelled; each delivered twice
    life = [
        ("sub", "evt_1", P0, subscription_obj(meta, "active", P0, P1)),
        ("sub", "evt_2", P0 + 5, subscription_obj(meta, "active", P0, P1, cancel_at_period_end=True)),
        ("sub", "evt_3", P0 + 9, subscription_obj(meta, "active", P0, P1)),
        ("sub", "evt_4", P1, subscription_obj(meta, "canceled", P0, P1, canceled_at=P1)),
    ]

    # when applied (and applied again), each as the inbox processes it: as its Stripe event
    for event in life + life:
        with actor_bound(Actor.stripe(event[1])):
            apply([event])

    # then one event per fact, numbered in order, each attributed to its Stripe event
    assert _events(Subscription.objects.get().pk) == [
        ("subscription.created", 1, "stripe", "evt_1"),
        ("subscription.status_changed", 2, "stripe", "evt_1"),
        ("subscription.cancel_scheduled", 3, "stripe", "evt_2"),
        ("subscription.resumed", 4, "stripe", "evt_3"),
        ("subscription.status_changed", 5, "stripe", "evt_4"),
        ("subscription.cancelled", 6, "stripe", "evt_4"),
    ]
