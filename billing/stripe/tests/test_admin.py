"""A Stripe event's page in the staff console: what happened, to whom, why it failed, when it is
tried again; finance reprocesses it from there, support only reads."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from billing.models import Payment, StripeEvent
from billing.payments.services import payment_create
from billing.stripe import gateway as stripe_gateway
from billing.stripe.tests.events import deliver, event
from devtools.testing import StandinServer
from payments_project.accounts.models import AuditLogEntry
from payments_project.accounts.tests.factories import UserFactory


def _staff(username: str, role: str) -> Client:
    user = UserFactory(username=username, is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def failed(
    client: Client, stripe_standin: StandinServer, settings: Any, django_capture_on_commit_callbacks: Any
) -> dict[str, Any]:
    """A payment_intent.succeeded that failed: Stripe did not answer when it was processed."""
    payment = payment_create(user=UserFactory(username="payer"), amount=1200, currency="USD")
    sdk = stripe_gateway.client()
    sdk.v1.payment_intents.update(payment.stripe_payment_intent_id, {"payment_method": "pm_card_visa"})
    intent = sdk.v1.payment_intents.confirm(payment.stripe_payment_intent_id)
    standin_url = settings.STRIPE_API_BASE
    settings.STRIPE_API_BASE, settings.STRIPE_MAX_NETWORK_RETRIES = "http://127.0.0.1:1", 0
    stripe_gateway.configure_sdk_globals()
    with django_capture_on_commit_callbacks(execute=True):
        deliver(client, event("payment_intent.succeeded", intent))
    settings.STRIPE_API_BASE = standin_url
    stripe_gateway.configure_sdk_globals()
    return {"payment": payment, "row": StripeEvent.objects.get()}


@pytest.mark.django_db
def test_a_failed_events_page_explains_it(failed: dict[str, Any]) -> None:
    # given a failed event, as support opens it
    row, payment = failed["row"], failed["payment"]
    page = _staff("agent", "support").get(f"/admin/billing/stripeevent/{row.pk}/change/").content.decode()

    # then a summary, the error's first line, the traceback folded, the payload pretty and folded
    assert "<strong>payment_intent.succeeded</strong>" in page
    assert "Failed (will retry)" in page
    assert '<p class="bo-error-line">APIConnectionError:' in page
    assert "<details><summary>Show the traceback</summary><pre>Traceback" in page
    assert '<details class="bo-json"><summary>Show the payload as Stripe sent it</summary>' in page
    assert f"&quot;id&quot;: &quot;{payment.stripe_payment_intent_id}&quot;" in page
    # attempts and the next automatic attempt (the first retry waits 10 s)
    assert "1 of 9" in page
    next_attempt = (row.started_at + timedelta(seconds=10)).strftime("%Y-%m-%d %H:%M:%S")
    assert f"about {next_attempt} UTC" in page
    # links to the customer and to the object, in our records and in Stripe's mirror
    assert f'href="/admin/accounts/customer/{payment.user_id}/change/"' in page
    assert f'href="/admin/billing/payment/?q={payment.stripe_payment_intent_id}"' in page
    # support has no reprocess button and no delete
    assert "Reprocess this event" not in page
    assert "/delete/" not in page


@pytest.mark.django_db
def test_finance_reprocesses_it_from_its_page_support_may_not(
    failed: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    # given the failed event and Stripe answering again
    row = failed["row"]
    url = f"/admin/billing/stripeevent/{row.pk}/reprocess/"
    support, finance = _staff("agent", "support"), _staff("fin", "finance")

    # when support tries, then finance presses the button
    refused = support.post(url)
    page = finance.get(f"/admin/billing/stripeevent/{row.pk}/change/").content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        done = finance.post(url)

    # then support was refused on a styled page, and finance's press processed it (audited)
    assert refused.status_code == 403
    assert "Your role does not allow this." in refused.content.decode()
    assert "Reprocess this event" in page
    assert done.status_code == 302
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("done", 2)
    assert Payment.objects.get().status == "succeeded"
    assert list(AuditLogEntry.objects.values_list("action", "actor__username")) == [
        ("stripe_event.reprocess", "fin")
    ]


@pytest.mark.django_db
def test_nobody_deletes_events(failed: dict[str, Any]) -> None:
    root = UserFactory(username="root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(root)
    listing = client.get("/admin/billing/stripeevent/").content.decode()
    assert "delete_selected" not in listing
    assert client.get(f"/admin/billing/stripeevent/{failed['row'].pk}/delete/").status_code == 403
