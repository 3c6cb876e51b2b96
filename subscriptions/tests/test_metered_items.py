"""A plan with usage-priced features: its Stripe subscription carries a metered item per feature
next to the plan's price, from checkout through a plan change to the renewal invoice. Against the
Stripe stand-in through the official SDK."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
import requests
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from billing.catalog.services import PushItem, stripe_price_ensure
from billing.catalog.tests.factories import (
    FeatureFactory,
    MeteredPriceFactory,
    PlanFactory,
    PlanFeatureFactory,
    PriceFactory,
    PricingZoneFactory,
)
from billing.models import Feature, MeteredPrice, PlanFeature
from billing.stripe import gateway as stripe_gateway
from devtools.testing import StandinServer
from payments_project.accounts.tests.factories import UserFactory
from payments_project.errors import Conflict, DomainError
from subscriptions import services
from subscriptions.checkout.services import checkout_session_create
from subscriptions.models import Subscription, SubscriptionStripeCall

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog() -> dict[str, Any]:
    """Basic (€9.00/month, API calls at €0.02) and Pro (€29.00/month, API calls at €0.01 and
    exports at €0.05), sold in the euro zone."""
    zone = PricingZoneFactory(code="euro", currency="EUR")
    basic, pro = PlanFactory(code="basic", name="Basic"), PlanFactory(code="pro", name="Pro")
    PriceFactory(plan=basic, currency="EUR", amount=900)
    PriceFactory(plan=pro, currency="EUR", amount=2900)
    calls = FeatureFactory(
        code="api_calls",
        name="API calls",
        unit="calls",
        kind=Feature.Kind.METERED,
        meter_event_name="api_calls",
    )
    exports = FeatureFactory(
        code="exports", name="Exports", unit="exports", kind=Feature.Kind.METERED, meter_event_name="exports"
    )
    return {
        "zone": zone,
        "basic": basic,
        "pro": pro,
        "basic_calls": MeteredPriceFactory(
            plan_feature=PlanFeatureFactory(plan=basic, feature=calls), zone=zone, unit_amount=2
        ),
        "pro_calls": MeteredPriceFactory(
            plan_feature=PlanFeatureFactory(plan=pro, feature=calls), zone=zone, unit_amount=1
        ),
        "pro_exports": MeteredPriceFactory(
            plan_feature=PlanFeatureFactory(plan=pro, feature=exports), zone=zone, unit_amount=5
        ),
    }


def _price_id(row: MeteredPrice) -> str:
    row.refresh_from_db()
    assert row.stripe_price_id
    return row.stripe_price_id


def _items(stripe_id: str) -> list[tuple[int, str, int | None]]:
    remote = stripe_gateway.client().v1.subscriptions.retrieve(stripe_id)
    return [
        (item.price.unit_amount, item.price.recurring.usage_type, item.get("quantity"))
        for item in remote["items"].data
    ]


def _sync(stripe_id: str) -> Subscription:
    remote = stripe_gateway.client().v1.subscriptions.retrieve(stripe_id)
    return services.subscription_sync_from_stripe(
        data=remote.to_dict(), event_id=f"evt_{time.monotonic_ns()}", event_created=timezone.now()
    )


def _subscribe(user: Any, plan_code: str) -> str:
    """Checkout in the euro zone, paid on the stand-in's page: the Stripe subscription's id."""
    session = checkout_session_create(
        user=user,
        plan_code=plan_code,
        country=None,
        zone_code="euro",
        success_url="https://x.test/ok",
        cancel_url="https://x.test/no",
    )
    paid = requests.post(f"{session['url']}/complete", json={"card": "4242424242424242"}, timeout=5)
    assert paid.status_code == 200, paid.text
    return str(paid.json()["subscription"])


def test_checkout_adds_the_plans_metered_prices_without_quantity(
    stripe_standin: StandinServer, catalog: dict[str, Any]
) -> None:
    # given ana buying Pro in the euro zone
    ana = UserFactory(username="ana")
    # when she opens a checkout
    session = checkout_session_create(
        user=ana,
        plan_code="pro",
        country=None,
        zone_code="euro",
        success_url="https://x.test/ok",
        cancel_url="https://x.test/no",
    )
    # then the session bills the plan now, and each metered price (pushed to Stripe) by usage
    assert (session["amount"], session["metered"]) == (
        2900,
        [
            {"feature": "api_calls", "unit_amount": 1, "currency": "EUR"},
            {"feature": "exports", "unit_amount": 5, "currency": "EUR"},
        ],
    )
    lines = stripe_gateway.client().v1.checkout.sessions.line_items.list(session["id"]).data
    assert [(line.price.id, line.get("quantity")) for line in lines] == [
        (lines[0].price.id, 1),
        (_price_id(catalog["pro_calls"]), None),
        (_price_id(catalog["pro_exports"]), None),
    ]
    page = requests.get(session["url"], timeout=5).text
    assert "€29.00/month, plus €0.01 per call (API calls) and €0.05 per export (Exports)" in page


def test_a_plan_without_metered_prices_in_the_zone_checks_out_with_its_price_alone(
    stripe_standin: StandinServer, catalog: dict[str, Any]
) -> None:
    # given a plan whose features are priced by usage in another zone only
    other = PricingZoneFactory(code="dollar", currency="USD")
    MeteredPrice.objects.filter(zone=catalog["zone"], plan_feature__plan=catalog["basic"]).update(zone=other)
    # when
    stripe_id = _subscribe(UserFactory(), "basic")
    # then
    assert _items(stripe_id) == [(900, "licensed", 1)]


def test_a_metered_subscription_is_synced_by_its_licensed_item_changed_and_billed_for_usage(
    stripe_standin: StandinServer, catalog: dict[str, Any]
) -> None:
    # given ana subscribed to Basic at checkout
    ana = UserFactory(username="ana")
    stripe_id = _subscribe(ana, "basic")
    # then Stripe holds the plan's item and the API calls item, and our row the plan's price
    assert _items(stripe_id) == [(900, "licensed", 1), (2, "metered", None)]
    sub = _sync(stripe_id)
    assert (sub.user_id, sub.plan.code, sub.amount, sub.currency) == (ana.pk, "basic", 900, "EUR")

    # when she moves to Pro
    stripe_price_ensure(item=PushItem(catalog["pro"], "EUR", 2900))
    services.subscription_change_plan(subscription=sub, plan=catalog["pro"], actor=ana)
    # then the plan's price is swapped, Basic's API calls price gone and Pro's two metered prices in
    assert _items(stripe_id) == [(2900, "licensed", 1), (1, "metered", None), (5, "metered", None)]
    sub = _sync(stripe_id)
    assert (sub.plan.code, sub.amount) == ("pro", 2900)

    # when she uses the API and exports, and the period ends
    gw = stripe_gateway.client()
    customer = str(gw.v1.subscriptions.retrieve(stripe_id).customer)
    for event_name, value in (("api_calls", 1200), ("exports", 4)):
        gw.v1.billing.meter_events.create(
            {
                "event_name": event_name,
                "payload": {"stripe_customer_id": customer, "value": str(value)},
                "timestamp": int(time.time()),
            }
        )
    advanced = requests.post(f"{stripe_standin.url}/_dev/clock/advance", json={"days": 32}, timeout=5)
    (invoice_id,) = advanced.json()["invoices"]
    # then the renewal invoice bills Pro and the usage at Pro's rates (and the plan change's
    # proration: the stand-in credits Basic's unused time in full)
    invoice = gw.v1.invoices.retrieve(invoice_id)
    lines = [(line.type, line.amount, line.quantity) for line in invoice.lines.data]
    assert lines == [
        ("subscription", 2900, 1),
        ("subscription", 1200, 1200),
        ("subscription", 20, 4),
        ("invoiceitem", -900, 1),
    ]
    assert invoice.amount_paid == 2900 + 1200 * 1 + 4 * 5 - 900


def test_sync_reads_the_plan_from_the_licensed_item_wherever_it_is(catalog: dict[str, Any]) -> None:
    # given a Stripe subscription whose metered item comes first
    sub = services.subscription_sync_from_stripe(
        data={
            "id": "sub_metered_first",
            "status": "active",
            "metadata": {"user_id": str(UserFactory().pk), "plan_code": "pro", "pricing_zone": "euro"},
            "current_period_start": 1_790_000_000,
            "current_period_end": 1_792_600_000,
            "items": {
                "data": [
                    {
                        "id": "si_calls",
                        "price": {
                            "id": "price_calls",
                            "currency": "eur",
                            "unit_amount": 1,
                            "recurring": {"usage_type": "metered"},
                        },
                    },
                    {
                        "id": "si_plan",
                        "price": {
                            "id": "price_pro",
                            "currency": "eur",
                            "unit_amount": 2900,
                            "recurring": {"usage_type": "licensed"},
                            "metadata": {"plan_code": "pro"},
                        },
                    },
                ]
            },
        },
        event_id="evt_sync",
        event_created=timezone.now(),
    )
    # then our row bills the plan's price, not a unit of usage
    assert (sub.plan.code, sub.amount, sub.currency) == ("pro", 2900, "EUR")


def test_a_renewal_invoice_moves_the_period_by_its_plan_line_not_its_usage_line(
    catalog: dict[str, Any],
) -> None:
    # given a subscription in its March period, and Pro's API calls price known to our catalog
    from datetime import UTC, datetime

    from subscriptions.services import subscription_apply_invoice_paid
    from subscriptions.tests.factories import SubscriptionFactory

    MeteredPrice.objects.filter(pk=catalog["pro_calls"].pk).update(stripe_price_id="price_pro_calls")
    march, april, may = (datetime(2026, month, 1, tzinfo=UTC) for month in (3, 4, 5))
    sub = SubscriptionFactory(
        plan=catalog["pro"],
        status="active",
        current_period_start=march,
        current_period_end=april,
        stripe_subscription_id="sub_metered",
    )

    def line(price_id: str, start: datetime, end: datetime) -> dict[str, Any]:
        return {
            "pricing": {"price_details": {"price": price_id}},
            "period": {"start": int(start.timestamp()), "end": int(end.timestamp())},
            "parent": {
                "type": "subscription_item_details",
                "subscription_item_details": {"proration": False, "subscription": "sub_metered"},
            },
        }

    # when April's invoice is paid: March's usage listed first (newer API shape: price ids only)
    invoice = {
        "id": "in_april",
        "object": "invoice",
        "subscription": "sub_metered",
        "amount_paid": 4100,
        "lines": {"data": [line("price_pro_calls", march, april), line("price_pro", april, may)]},
    }
    subscription_apply_invoice_paid(data=invoice, event_id="evt_april", event_created=timezone.now())

    # then the current period is April's, which the plan's line bills
    sub.refresh_from_db()
    assert (sub.current_period_start, sub.current_period_end) == (april, may)


def test_webhooks_of_a_metered_subscription_keep_the_plan_and_its_period(
    stripe_standin: StandinServer,
    catalog: dict[str, Any],
    client: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from billing.models import StripeEvent
    from billing.stripe.tests.events import deliver, event

    # given Pro bought at checkout, then renewed once with usage on the API calls meter
    stripe_id = _subscribe(UserFactory(username="buyer"), "pro")
    gw = stripe_gateway.client()
    remote = gw.v1.subscriptions.retrieve(stripe_id)
    gw.v1.billing.meter_events.create(
        {
            "event_name": "api_calls",
            "payload": {"stripe_customer_id": str(remote.customer), "value": "30"},
            "timestamp": int(time.time()),
        }
    )
    advanced = requests.post(f"{stripe_standin.url}/_dev/clock/advance", json={"days": 32}, timeout=5)
    (renewal_id,) = advanced.json()["invoices"]
    renewal = gw.v1.invoices.retrieve(renewal_id)
    created = int(remote.created)
    # when Stripe's events arrive through the webhook (dj-stripe re-reads them from the stand-in)
    for payload in (
        event("customer.subscription.created", remote, created=created),
        event(
            "invoice.payment_succeeded", gw.v1.invoices.retrieve(remote.latest_invoice), created=created + 1
        ),
        event("invoice.payment_succeeded", renewal, created=created + 2),
    ):
        with django_capture_on_commit_callbacks(execute=True):
            assert deliver(client, payload).status_code == 200
    # then the row bills Pro's price for the renewed period, whatever the usage line says
    assert set(StripeEvent.objects.values_list("status", flat=True)) == {"done"}
    sub = Subscription.objects.get(stripe_subscription_id=stripe_id)
    assert (sub.plan.code, sub.status, sub.amount, sub.currency) == ("pro", "active", 2900, "EUR")
    assert renewal.amount_paid == 2900 + 30 * 1
    assert int(sub.current_period_start.timestamp()) == remote["current_period_end"]


def _finance() -> Any:
    user = UserFactory(username="fin", is_staff=True)
    user.groups.add(Group.objects.get(name="finance"))
    return user


def _subscribed_before_usage_pricing(catalog: dict[str, Any]) -> tuple[Subscription, str]:
    """ana on Basic, bought while Basic had no price by usage; then API calls priced at €0.02."""
    catalog["basic_calls"].delete()
    ana = UserFactory(username="ana")
    stripe_id = _subscribe(ana, "basic")
    sub = _sync(stripe_id)
    assert _items(stripe_id) == [(900, "licensed", 1)]
    MeteredPriceFactory(
        plan_feature=PlanFeature.objects.get(plan=catalog["basic"], feature__code="api_calls"),
        zone=catalog["zone"],
        unit_amount=2,
    )
    return sub, stripe_id


def test_a_subscription_from_before_a_usage_price_gets_its_metered_item_once(
    stripe_standin: StandinServer, catalog: dict[str, Any]
) -> None:
    # given ana's subscription, older than Basic's price for API calls
    sub, stripe_id = _subscribed_before_usage_pricing(catalog)
    finance = _finance()

    # when finance syncs it, twice
    first = services.subscription_metered_items_sync(subscription=sub, staff_user=finance)
    again = services.subscription_metered_items_sync(subscription=sub, staff_user=finance)

    # then Stripe bills API calls by usage beside the plan; the second found nothing to do
    assert (first, again) == (True, False)
    assert _items(stripe_id) == [(900, "licensed", 1), (2, "metered", None)]
    (call,) = SubscriptionStripeCall.objects.filter(subscription=sub)
    assert (call.action, call.status, call.stripe_params["proration_behavior"]) == (
        "sync_metered_items",
        "applied",
        "none",
    )
    assert sub.history.filter(staff_user=finance).values_list("note", flat=True)[0] == (
        "metered items synced with plan basic: 1 added, 0 removed"
    )


def test_only_finance_syncs_and_only_a_live_subscription(
    stripe_standin: StandinServer, catalog: dict[str, Any]
) -> None:
    # given ana's older subscription and a support agent
    sub, _ = _subscribed_before_usage_pricing(catalog)
    support = UserFactory(username="agent", is_staff=True)
    support.groups.add(Group.objects.get(name="support"))

    # when support tries, then finance tries once it is cancelled
    with pytest.raises(DomainError) as refused:
        services.subscription_metered_items_sync(subscription=sub, staff_user=support)
    Subscription.objects.filter(pk=sub.pk).update(status=Subscription.Status.CANCELLED)
    sub.refresh_from_db()
    with pytest.raises(Conflict) as ended:
        services.subscription_metered_items_sync(subscription=sub, staff_user=_finance())

    # then
    assert (refused.value.code, refused.value.status_code) == ("forbidden", 403)
    assert ended.value.code == "not_live"
    assert SubscriptionStripeCall.objects.count() == 0


def test_the_command_syncs_every_live_subscription_and_a_rerun_changes_nothing(
    stripe_standin: StandinServer, catalog: dict[str, Any]
) -> None:
    # given ana's older subscription
    _, stripe_id = _subscribed_before_usage_pricing(catalog)
    _finance()

    # when the command runs twice
    outputs = []
    for _ in range(2):
        out = io.StringIO()
        call_command("subscriptions_metered_items_sync", "--staff", "fin", stdout=out)
        outputs.append(out.getvalue().strip())

    # then
    assert outputs == [
        "metered items: 1 changed, 0 already in sync, 0 failed",
        "metered items: 0 changed, 1 already in sync, 0 failed",
    ]
    assert _items(stripe_id) == [(900, "licensed", 1), (2, "metered", None)]


def test_finance_runs_the_admin_action_and_support_is_not_offered_it(
    stripe_standin: StandinServer, catalog: dict[str, Any], client: Client
) -> None:
    # given ana's older subscription, finance and support
    sub, stripe_id = _subscribed_before_usage_pricing(catalog)
    support = UserFactory(username="agent", is_staff=True)
    support.groups.add(Group.objects.get(name="support"))
    action = {"action": "sync_metered_items_action", "_selected_action": [sub.pk]}

    # when support opens the list and posts the action, then finance does
    client.force_login(support)
    support_page = client.get("/admin/subscriptions/subscription/").content.decode()
    client.post("/admin/subscriptions/subscription/", action)
    items_after_support = _items(stripe_id)
    client.force_login(_finance())
    done = client.post("/admin/subscriptions/subscription/", action, follow=True)

    # then
    assert "sync_metered_items_action" not in support_page
    assert items_after_support == [(900, "licensed", 1)]
    assert done.status_code == 200
    shown = [str(message) for message in done.context["messages"]]
    assert shown == ["Metered items checked: 1 subscription(s).", "Stripe items changed: 1 subscription(s)."]
    assert _items(stripe_id) == [(900, "licensed", 1), (2, "metered", None)]


def test_a_new_unit_amount_moves_live_subscriptions_onto_the_new_price(
    stripe_standin: StandinServer, catalog: dict[str, Any]
) -> None:
    # given ana on Basic, API calls at €0.02 by usage
    ana = UserFactory(username="ana")
    stripe_id = _subscribe(ana, "basic")
    sub = _sync(stripe_id)
    finance = _finance()

    # when finance prices API calls at €0.03 and syncs her subscription
    MeteredPrice.objects.filter(pk=catalog["basic_calls"].pk).update(unit_amount=3)
    changed = services.subscription_metered_items_sync(subscription=sub, staff_user=finance)

    # then the €0.02 item is gone and the €0.03 one bills her usage
    assert changed is True
    assert _items(stripe_id) == [(900, "licensed", 1), (3, "metered", None)]
    assert sub.history.filter(staff_user=finance).values_list("note", flat=True)[0] == (
        "metered items synced with plan basic: 1 added, 1 removed"
    )
