from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from billing.models import Plan
from entitlements.models import Entitlement
from entitlements.selectors import entitlement_check
from entitlements.services import (
    entitlement_grant_for_subscription,
    entitlement_grant_one_time,
    entitlement_revoke_for_subscription,
    entitlement_revoke_one_time,
)
from payments_project.accounts.tests.factories import UserFactory
from payments_project.errors import Conflict
from subscriptions.families.services import family_create, family_member_add, family_member_remove
from subscriptions.models import FamilyMember, Subscription
from subscriptions.tests.factories import FamilyFactory, SubscriptionFactory


def _allowed(user, code: str) -> bool:  # type: ignore[no-untyped-def]
    return bool(entitlement_check(user_id=user.pk, features=[code])[0]["allowed"])


@pytest.mark.django_db
def test_a_family_of_three_shares_the_plan_and_a_fourth_is_refused(
    make_plan: Callable[..., Plan], django_capture_on_commit_callbacks
) -> None:
    # given an owner with a family plan of 3 seats, and two members
    owner, ana, bob, cy = UserFactory(), UserFactory(), UserFactory(), UserFactory()
    family = family_create(owner=owner, name="home")
    subscription = SubscriptionFactory(
        user=owner, family=family, plan=make_plan("movies", is_family=True, max_members=3)
    )
    with django_capture_on_commit_callbacks(execute=True):
        entitlement_grant_for_subscription(subscription=subscription)
    for user in (owner, ana, bob):
        assert _allowed(user, "movies") is (user == owner)  # warm every snapshot
    with django_capture_on_commit_callbacks(execute=True):
        family_member_add(family=family, user=ana)
        family_member_add(family=family, user=bob)

    # then all three get the feature from the family
    assert [_allowed(user, "movies") for user in (owner, ana, bob)] == [True, True, True]
    assert entitlement_check(user_id=ana.pk, features=["movies"])[0]["source"] == "family"
    assert Entitlement.objects.get(subscription_id=subscription.pk).family_id == family.pk

    # when a fourth is added, they are refused
    with pytest.raises(Conflict) as refused:
        family_member_add(family=family, user=cy)
    assert (refused.value.code, refused.value.status_code) == ("family_full", 409)

    # when bob leaves, he loses it at once
    with django_capture_on_commit_callbacks(execute=True):
        family_member_remove(family=family, user=bob)
    assert [_allowed(user, "movies") for user in (owner, ana, bob)] == [True, True, False]

    # when the owner's subscription is cancelled, everyone loses it
    with django_capture_on_commit_callbacks(execute=True):
        entitlement_revoke_for_subscription(subscription=subscription)
    assert [_allowed(user, "movies") for user in (owner, ana, bob)] == [False, False, False]


@pytest.mark.django_db
def test_a_user_in_a_family_cannot_join_another(make_plan: Callable[..., Plan]) -> None:
    # given two families on family plans
    first, second = FamilyFactory(), FamilyFactory()
    for family in (first, second):
        SubscriptionFactory(user=family.owner, family=family, plan=make_plan(is_family=True, max_members=4))
    ana = UserFactory()
    family_member_add(family=first, user=ana)

    # when ana is added to the second, then refused
    with pytest.raises(Conflict) as refused:
        family_member_add(family=second, user=ana)
    assert refused.value.code == "already_in_family"
    assert list(FamilyMember.objects.filter(user_id=ana.pk).values_list("family_id", flat=True)) == [first.pk]


@pytest.mark.django_db
def test_family_rules_owner_cannot_leave_no_plan_one_family_per_owner() -> None:
    owner = UserFactory()
    family = family_create(owner=owner, name="home")

    with pytest.raises(Conflict) as leaving:
        family_member_remove(family=family, user=owner)
    with pytest.raises(Conflict) as no_plan:
        family_member_add(family=family, user=UserFactory())
    with pytest.raises(Conflict) as second:
        family_create(owner=owner, name="again")

    assert leaving.value.code == "owner_cannot_leave"
    assert no_plan.value.code == "no_family_plan"
    assert second.value.code == "already_owns_family"


@pytest.mark.django_db
def test_a_cancelled_family_subscription_no_longer_counts_for_the_size(
    make_plan: Callable[..., Plan],
) -> None:
    family = FamilyFactory()
    SubscriptionFactory(
        user=family.owner,
        family=family,
        plan=make_plan(is_family=True, max_members=5),
        status=Subscription.Status.CANCELLED,
    )
    with pytest.raises(Conflict) as refused:
        family_member_add(family=family, user=UserFactory())
    assert refused.value.code == "no_family_plan"


@pytest.mark.django_db
def test_one_time_grant_is_idempotent_and_revoked_by_its_reference(
    make_plan: Callable[..., Plan], django_capture_on_commit_callbacks
) -> None:
    # given a one-time purchase granted twice (a replayed webhook)
    user = UserFactory()
    plan = make_plan("pack")
    entitlement_grant_one_time(user=user, plan=plan, source_ref="pi_1")
    entitlement_grant_one_time(user=user, plan=plan, source_ref="pi_1")
    assert Entitlement.objects.filter(source_ref="pi_1").count() == 1
    assert entitlement_check(user_id=user.pk, features=["pack"])[0]["source"] == "one_time"

    # when refunded, then refused on the next check, and a replay does not bring it back
    with django_capture_on_commit_callbacks(execute=True):
        assert entitlement_revoke_one_time(source_ref="pi_1") == 1
    entitlement_grant_one_time(user=user, plan=plan, source_ref="pi_1")
    assert _allowed(user, "pack") is False
    assert list(Entitlement.objects.filter(source_ref="pi_1").values_list("status", flat=True)) == ["revoked"]


@pytest.mark.django_db
def test_members_added_in_the_admin_go_through_the_family_rules(
    make_plan: Callable[..., Plan], client: Any
) -> None:
    # given a family on a plan for 2 (the owner is a member) and a superuser in the admin
    owner = UserFactory(username="owner")
    family = family_create(owner=owner, name="Home")
    SubscriptionFactory(user=owner, family=family, plan=make_plan(is_family=True, max_members=2))
    ana, bob = UserFactory(username="ana"), UserFactory(username="bob")
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    existing = list(FamilyMember.objects.filter(family=family).values_list("pk", "user_id"))

    # when staff add ana and bob in the family's page
    form = {
        "owner": owner.pk,
        "name": "Home",
        "members-TOTAL_FORMS": str(len(existing) + 2),
        "members-INITIAL_FORMS": str(len(existing)),
        "members-MIN_NUM_FORMS": "0",
        "members-MAX_NUM_FORMS": "1000",
    }
    for index, (pk, user_id) in enumerate(existing):
        form |= {
            f"members-{index}-id": str(pk),
            f"members-{index}-family": str(family.pk),
            f"members-{index}-user": str(user_id),
        }
    for index, user in enumerate((ana, bob), start=len(existing)):
        form |= {f"members-{index}-family": str(family.pk), f"members-{index}-user": str(user.pk)}
    response = client.post(f"/admin/subscriptions/family/{family.pk}/change/", form, follow=True)

    # then only ana fits, and the admin says why bob was refused
    assert response.status_code == 200
    assert sorted(FamilyMember.objects.filter(family=family).values_list("user__username", flat=True)) == [
        "ana",
        "owner",
    ]
    assert "The family already has its 2 members." in response.content.decode()
