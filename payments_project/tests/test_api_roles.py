"""Who may name another user (`user_id`) over the API: reads are open to support and finance staff
(and service accounts, superusers), writes only to service accounts and superusers."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group

from billing.models import Payment
from billing.payments.tests.factories import PaymentFactory
from payments_project.accounts.tests.factories import UserFactory
from payments_project.tests.helpers import token_client
from subscriptions.tests.factories import SubscriptionFactory


def _member(username: str, group: str | None) -> Any:
    user = UserFactory(username=username, is_staff=group in ("support", "finance"))
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def bob() -> dict[str, Any]:
    user = UserFactory(username="bob")
    return {
        "user": user,
        "payment": PaymentFactory(user=user),
        "subscription": SubscriptionFactory(user=user),
    }


def _reads(bob: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any] | None]]:
    uid, payment, subscription = bob["user"].pk, bob["payment"].pk, bob["subscription"].pk
    return {
        "entitlement check": ("get", f"/api/v1/entitlements/check?feature=export_pdf&user_id={uid}", None),
        "entitlement list": ("get", f"/api/v1/entitlements/?user_id={uid}", None),
        "bulk check": (
            "post",
            "/api/v1/entitlements/bulk-check",
            {"features": ["export_pdf"], "user_id": uid},
        ),
        "payments list": ("get", f"/api/v1/payments/?user_id={uid}", None),
        "payment detail": ("get", f"/api/v1/payments/{payment}/", None),
        "subscriptions list": ("get", f"/api/v1/subscriptions/?user_id={uid}", None),
        "subscription detail": ("get", f"/api/v1/subscriptions/{subscription}/", None),
        "me": ("get", f"/api/v1/me/?user_id={uid}", None),
    }


def _call(client: Any, method: str, url: str, body: dict[str, Any] | None) -> int:
    if method == "get":
        return int(client.get(url).status_code)
    return int(client.post(url, body or {}, format="json").status_code)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("group", "expected"),
    [("support", 200), ("finance", 200), ("service", 200), (None, 403)],
)
def test_reads_about_another_user(group: str | None, expected: int, bob: dict[str, Any]) -> None:
    client = token_client(_member("caller", group))
    answers = {what: _call(client, *call) for what, call in _reads(bob).items()}
    # A customer asking about someone else is refused (the details are simply not theirs: 404).
    if expected == 403:
        expected_answers = dict.fromkeys(answers, 403) | {"payment detail": 404, "subscription detail": 404}
    else:
        expected_answers = dict.fromkeys(answers, 200)
    assert answers == expected_answers


@pytest.mark.django_db
def test_support_reads_bobs_payments_and_only_his(bob: dict[str, Any]) -> None:
    PaymentFactory(user=UserFactory(username="carol"))
    body = token_client(_member("agent", "support")).get(f"/api/v1/payments/?user_id={bob['user'].pk}").json()
    assert [row["id"] for row in body["results"]] == [bob["payment"].pk]
    assert body["results"][0]["kind"] == "one_time"


@pytest.mark.django_db
@pytest.mark.parametrize("group", ["support", "finance"])
def test_support_and_finance_never_write_for_another_user(group: str, bob: dict[str, Any]) -> None:
    client = token_client(_member("staff", group))
    uid, subscription = bob["user"].pk, bob["subscription"].pk
    pay = client.post(f"/api/v1/payments/?user_id={uid}", {"amount": 100, "currency": "EUR"}, format="json")
    checkout = client.post(
        f"/api/v1/checkout-sessions/?user_id={uid}",
        {"plan": "pro", "success_url": "https://e.com/ok", "cancel_url": "https://e.com/no"},
        format="json",
    )
    assert (pay.status_code, checkout.status_code) == (403, 403)
    assert pay.json()["error"]["message"] == "Only service accounts and superusers may act for another user."
    assert Payment.objects.count() == 1
    if group == "support":
        # reading bob's subscription does not make it theirs to change
        assert (
            client.post(f"/api/v1/subscriptions/{subscription}/cancel", {}, format="json").status_code == 404
        )


@pytest.mark.django_db
def test_me_says_what_the_caller_may_do() -> None:
    support = token_client(_member("agent", "support")).get("/api/v1/me/").json()
    service = token_client(_member("svc", "service")).get("/api/v1/me/").json()
    customer = token_client(_member("ann", None)).get("/api/v1/me/").json()
    assert (support["can_read_any_user"], support["can_act_for_any_user"]) == (True, False)
    assert (service["can_read_any_user"], service["can_act_for_any_user"]) == (True, True)
    assert (customer["can_read_any_user"], customer["can_act_for_any_user"]) == (False, False)


@pytest.mark.django_db
def test_the_schema_says_who_may_pass_user_id() -> None:
    schema = token_client(_member("ann", None)).get("/api/v1/schema/?format=json").json()
    check = schema["paths"]["/api/v1/entitlements/check/"]["get"]
    create = schema["paths"]["/api/v1/payments/"]["post"]
    read_param = next(p for p in check["parameters"] if p["name"] == "user_id")
    write_param = next(p for p in create["parameters"] if p["name"] == "user_id")
    assert "support and finance staff" in read_param["description"]
    assert write_param["description"] == "Pay on behalf of this user: service accounts and superusers only."
    assert "finance" in schema["paths"]["/api/v1/payments/{id}/status/"]["post"]["description"]


@pytest.mark.django_db
@pytest.mark.parametrize("where", ["query", "body"])
def test_a_service_account_pays_for_bob_named_in_the_body_or_the_query(
    where: str, bob: dict[str, Any], stripe_standin: Any
) -> None:
    # given a service account
    client = token_client(_member("svc", "service"))
    uid = bob["user"].pk
    query = f"?user_id={uid}" if where == "query" else ""
    named = {"user_id": uid} if where == "body" else {}

    # when it pays for bob, naming him in the query or the body
    pay = client.post(f"/api/v1/payments/{query}", {"amount": 100, "currency": "EUR", **named}, format="json")

    # then the payment is bob's
    assert (pay.status_code, pay.json()["user_id"]) == (201, uid)
    assert Payment.objects.filter(user=bob["user"]).count() == 2


@pytest.mark.django_db
def test_a_customer_naming_another_user_in_the_body_is_refused_and_not_charged(bob: dict[str, Any]) -> None:
    client = token_client(_member("ann", None))

    pay = client.post(
        "/api/v1/payments/", {"amount": 100, "currency": "EUR", "user_id": bob["user"].pk}, format="json"
    )
    checkout = client.post(
        "/api/v1/checkout-sessions/",
        {
            "plan": "pro",
            "success_url": "https://e.com/ok",
            "cancel_url": "https://e.com/no",
            "user_id": bob["user"].pk,
        },
        format="json",
    )

    # (the body's user_id used to be ignored: the caller was charged instead)
    assert (pay.status_code, checkout.status_code) == (403, 403)
    assert pay.json()["error"]["message"] == "Only service accounts and superusers may act for another user."
    assert Payment.objects.count() == 1  # bob's own, from the fixture


@pytest.mark.django_db
def test_a_write_naming_two_users_is_a_400(bob: dict[str, Any]) -> None:
    client = token_client(_member("svc", "service"))
    other = UserFactory(username="carol")

    pay = client.post(
        f"/api/v1/payments/?user_id={other.pk}",
        {"amount": 100, "currency": "EUR", "user_id": bob["user"].pk},
        format="json",
    )

    assert (pay.status_code, list(pay.json()["error"]["fields"])) == (400, ["user_id"])
    assert Payment.objects.count() == 1
