from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import Group
from django.test import override_settings

from billing.models import Plan
from entitlements.services import entitlement_grant_for_subscription
from payments_project.accounts.tests.factories import UserFactory
from payments_project.tests.helpers import token_client
from subscriptions.families.services import family_create
from subscriptions.models import FamilyMember
from subscriptions.tests.factories import SubscriptionFactory


@pytest.mark.django_db
def test_check_answers_for_the_caller(make_plan: Callable[..., Plan]) -> None:
    # given a subscriber with export
    subscription = SubscriptionFactory(plan=make_plan("export"))
    entitlement_grant_for_subscription(subscription=subscription)

    # when they check it
    response = token_client(subscription.user).get("/api/v1/entitlements/check?feature=export")

    # then
    assert response.status_code == 200
    assert response.json() == {
        "feature": "export",
        "allowed": True,
        "reason": "granted",
        "source": "own",
        "plan": subscription.plan.code,
        "expires_at": subscription.current_period_end.isoformat(),
        "limit": None,
        "used": None,
        "remaining": None,
        "resets_at": None,
    }


@pytest.mark.django_db
def test_check_without_feature_is_a_validation_error() -> None:
    response = token_client(UserFactory()).get("/api/v1/entitlements/check")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["fields"]["feature"][0]["code"] == "required"


@pytest.mark.django_db
def test_a_user_cannot_check_for_another_user_but_a_service_account_can(
    make_plan: Callable[..., Plan],
) -> None:
    # given bob's subscription, ana, and a service account
    subscription = SubscriptionFactory(plan=make_plan("export"))
    entitlement_grant_for_subscription(subscription=subscription)
    bob = subscription.user
    service = UserFactory(username="checkout-service")
    service.groups.add(Group.objects.get(name="service"))
    url = f"/api/v1/entitlements/check?feature=export&user_id={bob.pk}"

    # when each asks about bob
    refused = token_client(UserFactory(username="ana")).get(url)
    answered = token_client(service).get(url)

    # then
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    assert answered.status_code == 200
    assert answered.json()["allowed"] is True


@pytest.mark.django_db
@override_settings(RATELIMIT_RATES={})
def test_bulk_check_warm_is_one_redis_command_through_the_api(
    make_plan: Callable[..., Plan], redis_commands: list[tuple[object, ...]]
) -> None:
    # given 100 granted features and warm snapshots (rate limits off: they cost a Redis call too)
    codes = [f"f{i:03d}" for i in range(100)]
    subscription = SubscriptionFactory(plan=make_plan(*codes))
    entitlement_grant_for_subscription(subscription=subscription)
    client = token_client(subscription.user)
    client.post("/api/v1/entitlements/bulk-check", {"features": codes}, format="json")
    redis_commands.clear()

    # when the 100 plus an unknown one are checked
    response = client.post("/api/v1/entitlements/bulk-check", {"features": [*codes, "nope"]}, format="json")

    # then
    results = response.json()["results"]
    assert response.status_code == 200
    assert [r["allowed"] for r in results] == [True] * 100 + [False]
    assert results[100]["reason"] == "unknown_feature"
    # one script (hotpath): the token snapshot and the 101 answers; no SQL, no other command
    assert [command[0] for command in redis_commands] == ["EVALSHA"]


@pytest.mark.django_db
def test_bulk_check_refuses_more_than_200_codes() -> None:
    response = token_client(UserFactory()).post(
        "/api/v1/entitlements/bulk-check", {"features": [f"f{i}" for i in range(201)]}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["fields"]["features"][0]["code"] == "max_length"


@pytest.mark.django_db
@pytest.mark.parametrize("code", ["a\x01", "pdf\u202e", "zero\u200bwidth", "pdf\t", "a\ufffd"])
def test_a_feature_code_with_a_control_or_format_character_is_refused(code: str) -> None:
    # given a customer with a token (the check's hot path answers warm tokens)
    client = token_client(UserFactory())

    # when the code is checked alone and in a bulk check
    single = client.get("/api/v1/entitlements/check", {"feature": code})
    bulk = client.post("/api/v1/entitlements/bulk-check", {"features": ["ok", code]}, format="json")

    # then both are 400 on that field, as the usage endpoints answer it (no code echoed back)
    assert (single.status_code, single.json()["error"]["fields"]["feature"][0]["message"]) == (
        400,
        "Only printable characters.",
    )
    assert (bulk.status_code, bulk.json()["error"]["fields"]["features.1"][0]["message"]) == (
        400,
        "Only printable characters.",
    )


@pytest.mark.django_db
@pytest.mark.parametrize("spelling", ["1_0", "+5", " 5", "\u0665", "5.0"])
def test_a_user_id_is_digits_only_wherever_it_is_read(spelling: str) -> None:
    # given a service account, which may read anyone's entitlements
    service = UserFactory()
    service.groups.add(Group.objects.get(name="service"))
    client = token_client(service)

    # when it names a user with an odd spelling of a number, in the check and in the list
    check = client.get("/api/v1/entitlements/check", {"feature": "export", "user_id": spelling})
    listed = client.get("/api/v1/entitlements/", {"user_id": spelling})

    # then both are 400 on user_id ("1_0" is not read as user 10, nor "\u0665" as user 5)
    for response in (check, listed):
        assert (response.status_code, list(response.json()["error"]["fields"])) == (400, ["user_id"])


@pytest.mark.django_db
def test_list_shows_effective_entitlements(make_plan: Callable[..., Plan]) -> None:
    subscription = SubscriptionFactory(plan=make_plan("export", "sso"))
    entitlement_grant_for_subscription(subscription=subscription)

    response = token_client(subscription.user).get("/api/v1/entitlements/")

    assert response.status_code == 200
    assert [(r["feature"], r["source"], r["allowed"]) for r in response.json()] == [
        ("export", "own", True),
        ("sso", "own", True),
    ]


@pytest.mark.django_db
def test_family_api_create_add_mine_remove(make_plan: Callable[..., Plan]) -> None:
    # given an owner who creates a family and subscribes to a family plan
    owner, ana, eve = UserFactory(username="owner"), UserFactory(username="ana"), UserFactory(username="eve")
    client = token_client(owner)
    created = client.post("/api/v1/families/", {"name": "home"}, format="json")
    family_id = created.json()["id"]
    subscription = SubscriptionFactory(
        user=owner, family_id=family_id, plan=make_plan("movies", is_family=True, max_members=2)
    )
    entitlement_grant_for_subscription(subscription=subscription)

    # when eve tries to add herself, the owner invites ana who accepts, and eve, accepting too, finds
    # the plan full
    by_eve = token_client(eve).post(
        f"/api/v1/families/{family_id}/members", {"user_id": eve.pk}, format="json"
    )
    ana_client = token_client(ana)
    to_ana = client.post(f"/api/v1/families/{family_id}/invitations", {"user_id": ana.pk}, format="json")
    ana_client.post(f"/api/v1/families/invitations/{to_ana.json()['id']}/accept")
    added = client.get("/api/v1/families/mine")
    to_eve = client.post(f"/api/v1/families/{family_id}/invitations", {"user_id": eve.pk}, format="json")
    full = token_client(eve).post(f"/api/v1/families/invitations/{to_eve.json()['id']}/accept")
    mine = ana_client.get("/api/v1/families/mine")
    ana_check = ana_client.get("/api/v1/entitlements/check?feature=movies")
    left = ana_client.delete(f"/api/v1/families/{family_id}/members/{ana.pk}")
    owner_leaves = client.delete(f"/api/v1/families/{family_id}/members/{owner.pk}")

    # then
    assert created.status_code == 201
    assert created.json()["members"][0]["username"] == "owner"
    assert by_eve.status_code == 403
    assert added.status_code == 200
    assert [m["username"] for m in added.json()["members"]] == ["owner", "ana"]
    assert full.status_code == 409
    assert full.json()["error"]["code"] == "family_full"
    assert mine.status_code == 200
    assert mine.json()["id"] == family_id
    assert (ana_check.json()["allowed"], ana_check.json()["source"]) == (True, "family")
    assert left.status_code == 204
    assert owner_leaves.status_code == 409
    assert owner_leaves.json()["error"]["code"] == "owner_cannot_leave"
    assert list(
        FamilyMember.objects.filter(family_id=family_id).values_list("user__username", flat=True)
    ) == ["owner"]
    assert ana_client.get("/api/v1/families/mine").status_code == 404


@pytest.mark.django_db
def test_family_create_twice_is_409() -> None:
    owner = UserFactory()
    family_create(owner=owner, name="home")
    response = token_client(owner).post("/api/v1/families/", {"name": "again"}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_owns_family"
