"""Refunds by finance staff, in the service and through the admin, against the Stripe stand-in."""

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from billing.models import Payment, Refund
from billing.payments.services import RefundRefused, payment_create, refund_create
from billing.payments.signals import payment_refunded
from billing.stripe import gateway as stripe_gateway
from devtools.testing import StandinServer
from payments_project.accounts.tests.factories import UserFactory
from payments_project.errors import DomainError


@pytest.fixture
def paid(stripe_standin: StandinServer) -> Payment:
    return payment_create(
        user=UserFactory(username="payer"), amount=3000, currency="KWD", payment_method="pm_card_visa"
    )


@pytest.fixture
def finance() -> Any:
    user = UserFactory(username="fin", is_staff=True)
    user.groups.add(Group.objects.get(name="finance"))
    return user


def _stripe_refunds(payment: Payment) -> list[tuple[int, str | None]]:
    refunds = stripe_gateway.client().v1.refunds.list({"payment_intent": payment.stripe_payment_intent_id})
    return sorted((r.amount, r.get("reason")) for r in refunds.data)


@pytest.mark.django_db
def test_partial_then_full_refund_and_an_over_refund_refused(paid: Payment, finance: Any) -> None:
    # given a paid 3.000 KWD payment
    seen: list[tuple[int, bool]] = []

    def on_refund(sender: Any, refund: Refund, revoke_entitlements: bool, **kw: Any) -> None:
        seen.append((refund.amount, revoke_entitlements))

    payment_refunded.connect(on_refund)
    try:
        # when finance refunds 1.000 KWD, then tries 2.500 KWD, then refunds the rest
        partial = refund_create(
            payment_id=paid.pk, amount=1000, reason="requested_by_customer", staff_user=finance
        )
        with pytest.raises(RefundRefused) as refused:
            refund_create(payment_id=paid.pk, amount=2500, reason="duplicate", staff_user=finance)
        rest = refund_create(
            payment_id=paid.pk, amount=None, reason="duplicate", staff_user=finance, revoke_entitlements=True
        )
    finally:
        payment_refunded.disconnect(on_refund)

    # then Stripe and our rows agree; the over-refund left no trace anywhere
    assert refused.value.code == "over_refund"
    assert refused.value.message == "Only KWD 2.000 is left to refund (asked KWD 2.500)."
    assert (partial.amount, partial.status, partial.created_by) == (1000, "succeeded", finance)
    assert (rest.amount, rest.reason) == (2000, "duplicate")
    paid.refresh_from_db()
    assert (paid.amount_refunded, paid.refundable_amount) == (3000, 0)
    assert _stripe_refunds(paid) == [(1000, "requested_by_customer"), (2000, "duplicate")]
    assert Refund.objects.count() == 2
    assert seen == [(1000, False), (2000, True)]


@pytest.mark.django_db
def test_an_unpaid_payment_cannot_be_refunded(stripe_standin: StandinServer, finance: Any) -> None:
    unpaid = payment_create(user=UserFactory(), amount=500, currency="USD")
    with pytest.raises(RefundRefused, match="Only succeeded payments can be refunded"):
        refund_create(payment_id=unpaid.pk, amount=100, reason="duplicate", staff_user=finance)
    assert Refund.objects.count() == 0


@pytest.mark.django_db
def test_admin_refund_form_in_major_units(paid: Payment, finance: Any, client: Client) -> None:
    # given finance staff logged in to the admin
    client.force_login(finance)
    url = f"/admin/billing/payment/{paid.pk}/refund/"

    # when they open the form and refund 0.500 KWD
    page = client.get(url)
    done = client.post(url, {"amount": "0.500", "reason": "requested_by_customer", "note": "late delivery"})

    # then the page showed what is left, and 500 fils went back through Stripe
    assert page.status_code == 200
    assert "KWD 3.000" in page.content.decode()
    assert done.status_code == 302
    refund = Refund.objects.get()
    assert (refund.amount, refund.note, refund.created_by) == (500, "late delivery", finance)
    assert _stripe_refunds(paid) == [(500, "requested_by_customer")]


@pytest.mark.django_db
def test_admin_over_refund_is_refused_with_a_message(paid: Payment, finance: Any, client: Client) -> None:
    client.force_login(finance)
    response = client.post(
        f"/admin/billing/payment/{paid.pk}/refund/", {"amount": "3.010", "reason": "duplicate"}
    )
    assert response.status_code == 200
    assert "Only KWD 3.000 is left to refund (asked KWD 3.010)." in response.content.decode()
    assert Refund.objects.count() == 0


@pytest.mark.django_db
def test_support_can_view_payments_but_not_refund(paid: Payment, client: Client) -> None:
    support = UserFactory(username="sup", is_staff=True)
    support.groups.add(Group.objects.get(name="support"))
    client.force_login(support)
    assert client.get(f"/admin/billing/payment/{paid.pk}/change/").status_code == 200
    assert client.get(f"/admin/billing/payment/{paid.pk}/refund/").status_code == 403
    assert (
        client.post(f"/admin/billing/payment/{paid.pk}/refund/", {"reason": "duplicate"}).status_code == 403
    )
    assert Refund.objects.count() == 0


@pytest.mark.django_db
def test_one_time_purchase_grants_and_a_refund_with_revoke_takes_it_back(
    stripe_standin: StandinServer, finance: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # given a one-time plan with a feature, bought with a good card
    from billing.catalog.tests.factories import FeatureFactory, PlanFactory, PlanFeatureFactory, PriceFactory
    from entitlements.selectors import entitlement_check

    lifetime = PlanFactory(code="lifetime", interval="one_time")
    PriceFactory(plan=lifetime, currency="USD", amount=4900)
    PlanFeatureFactory(plan=lifetime, feature=FeatureFactory(code="export_pdf"))
    buyer = UserFactory(username="buyer")
    payment = payment_create(
        user=buyer, amount=4900, currency="USD", payment_method="pm_card_visa", plan=lifetime
    )

    # then the very next check allows it, from the one-time purchase
    check = entitlement_check(user_id=buyer.pk, features=["export_pdf"])[0]
    assert (check["allowed"], check["source"]) == (True, "one_time")

    # when finance refunds it and revokes what it bought (the cache is invalidated on commit)
    with django_capture_on_commit_callbacks(execute=True):
        refund_create(
            payment_id=payment.pk,
            amount=None,
            reason="requested_by_customer",
            staff_user=finance,
            revoke_entitlements=True,
        )

    # then the next check refuses it
    assert entitlement_check(user_id=buyer.pk, features=["export_pdf"])[0]["allowed"] is False


@pytest.mark.django_db
def test_a_refund_stripe_did_not_answer_stays_pending_counts_and_is_sent_once_later(
    paid: Payment, finance: Any, settings: Any
) -> None:
    # given Stripe unreachable when finance refunds 1.000 KWD of 3.000
    from datetime import timedelta

    from django.utils import timezone

    from billing.payments.services import RefundPending, refunds_resubmit

    standin = settings.STRIPE_API_BASE
    settings.STRIPE_API_BASE = "http://127.0.0.1:1"
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    stripe_gateway.client.cache_clear()
    try:
        with pytest.raises(RefundPending, match="do not refund again"):
            refund_create(payment_id=paid.pk, amount=1000, reason="duplicate", staff_user=finance)
    finally:
        settings.STRIPE_API_BASE = standin
        stripe_gateway.client.cache_clear()

    # then it is recorded as pending and already counts against what is left
    pending = Refund.objects.get()
    paid.refresh_from_db()
    assert (pending.status, pending.stripe_refund_id, paid.amount_refunded) == ("pending", None, 1000)
    with pytest.raises(RefundRefused, match=r"Only KWD 2\.000 is left"):
        refund_create(payment_id=paid.pk, amount=2500, reason="duplicate", staff_user=finance)

    # when the beat job runs with Stripe back (twice, as a retried job would)
    Refund.objects.filter(pk=pending.pk).update(created_at=timezone.now() - timedelta(minutes=2))
    assert refunds_resubmit() == 1
    assert refunds_resubmit() == 0

    # then exactly one refund exists at Stripe and ours is attached to it
    pending.refresh_from_db()
    assert pending.status == "succeeded" and pending.stripe_refund_id is not None
    assert _stripe_refunds(paid) == [(1000, "duplicate")]


@pytest.mark.django_db
def test_a_refund_stripe_refuses_is_failed_and_no_longer_counts(paid: Payment, finance: Any) -> None:
    # given the payment refunded in full behind our back (Stripe's dashboard), unknown to us yet
    stripe_gateway.client().v1.refunds.create({"payment_intent": paid.stripe_payment_intent_id})

    # when finance refunds part of it here, Stripe refuses (nothing left there)
    with pytest.raises(DomainError):
        refund_create(payment_id=paid.pk, amount=500, reason="duplicate", staff_user=finance)

    # then our row says failed and the refundable amount is untouched by it
    refund = Refund.objects.get()
    paid.refresh_from_db()
    assert (refund.status, paid.amount_refunded) == ("failed", 0)
