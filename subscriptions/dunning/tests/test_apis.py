"""GET /api/v1/dunning/: the caller's open case, as a customer, a stranger, staff and anonymous."""

from __future__ import annotations

from datetime import timedelta

import pytest
from rest_framework.test import APIClient

from payments_project.accounts.tests.factories import UserFactory
from payments_project.backoffice.tests.scenario import staff
from subscriptions.dunning.tests.factories import DunningAttemptFactory, DunningCaseFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/dunning/"


def _client(user: object | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def test_the_customer_sees_their_open_case_with_the_next_retry() -> None:
    # given a past-due case with its second retry still to come
    case = DunningCaseFactory(amount_due=1500, currency="EUR")
    DunningAttemptFactory(case=case, number=1, status="failed", due_at=case.opened_at + timedelta(days=1))
    DunningAttemptFactory(case=case, number=2, due_at=case.opened_at + timedelta(days=3))
    # when its customer asks
    response = _client(case.subscription.user).get(URL)
    # then the banner has what it needs
    assert response.status_code == 200
    assert response.json() == {
        "case": {
            "id": case.pk,
            "subscription_id": case.subscription_id,
            "plan": case.subscription.plan.code,
            "stage": "past_due",
            "amount_due": 1500,
            "currency": "EUR",
            "opened_at": "2027-02-01T09:00:00Z",
            "next_retry_at": "2027-02-04T09:00:00Z",
            "cancel_at": "2027-02-15T09:00:00Z",
            "needs_new_card": False,
            "action": "update_card_or_wait",
        }
    }


def test_a_hard_decline_asks_for_a_new_card_and_no_retry_is_announced() -> None:
    case = DunningCaseFactory(stage="suspended", needs_new_card=True)
    body = _client(case.subscription.user).get(URL).json()["case"]
    assert (body["stage"], body["next_retry_at"], body["action"]) == ("suspended", None, "update_card")


def test_no_open_case_is_null_and_a_closed_one_is_not_shown() -> None:
    closed = DunningCaseFactory(stage="recovered")
    assert _client(closed.subscription.user).get(URL).json() == {"case": None}
    assert _client(UserFactory()).get(URL).json() == {"case": None}


def test_another_customer_cannot_read_it_but_staff_can() -> None:
    case = DunningCaseFactory()
    stranger = _client(UserFactory()).get(URL, {"user_id": case.subscription.user_id})
    assert stranger.status_code == 403
    for role in ("support", "finance"):
        response = _client(staff(f"staff-{role}", role)).get(URL, {"user_id": case.subscription.user_id})
        assert (response.status_code, response.json()["case"]["id"]) == (200, case.pk)


@pytest.mark.parametrize("user_id", ["abc", "0", "-1", "9" * 30])
def test_a_bad_user_id_is_a_400(user_id: str) -> None:
    response = _client(staff("agent", "support")).get(URL, {"user_id": user_id})
    assert response.status_code == 400


def test_anonymous_is_refused() -> None:
    assert _client(None).get(URL).status_code in (401, 403)


def test_it_is_in_the_openapi_schema() -> None:
    schema = _client(None).get("/api/v1/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/v1/dunning/"]["get"]
    assert "200" in operation["responses"]
