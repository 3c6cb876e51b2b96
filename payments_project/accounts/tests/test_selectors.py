"""Who may act for, or read, any user: one statement, the same answers as Django's has_perm."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group, Permission

from payments_project.accounts.selectors import (
    ACT_FOR_ANY_USER_PERMISSION,
    READ_ANY_USER_PERMISSION,
    can_act_for_any_user,
    can_read_any_user,
)
from payments_project.accounts.tests.factories import UserFactory

pytestmark = [pytest.mark.django_db]


def _people() -> dict[str, Any]:
    direct = UserFactory(username="direct")
    direct.user_permissions.add(Permission.objects.get(codename="act_for_any_user"))
    people = {
        "customer": UserFactory(username="customer"),
        "staff without a role": UserFactory(username="staff", is_staff=True),
        "direct permission": direct,
        "superuser": UserFactory(username="root", is_superuser=True),
    }
    for group in ("service", "support", "finance"):
        people[group] = UserFactory(username=group)
        people[group].groups.add(Group.objects.get(name=group))
    people["inactive service"] = UserFactory(username="gone", is_active=False)
    people["inactive service"].groups.add(Group.objects.get(name="service"))
    return people


def _fresh(user: Any) -> Any:
    """As an API request sees its user: a new object, no permission loaded."""
    return get_user_model().objects.get(pk=user.pk)


def test_the_answers_are_who_the_roles_say() -> None:
    # given one user of each kind
    people = _people()

    # when each is asked about, as a fresh object
    answers = {
        name: (can_act_for_any_user(_fresh(user)), can_read_any_user(_fresh(user)))
        for name, user in people.items()
    }

    # then
    assert answers == {
        "customer": (False, False),
        "staff without a role": (False, False),
        "direct permission": (True, True),
        "superuser": (True, True),
        "service": (True, True),
        "support": (False, True),
        "finance": (False, True),
        "inactive service": (False, False),
    }
    assert (can_act_for_any_user(AnonymousUser()), can_read_any_user(AnonymousUser())) == (False, False)


def test_they_are_djangos_own_answers() -> None:
    # given one user of each kind
    people = _people()

    # then the one statement and has_perm's two queries agree on every one
    for user in people.values():
        act = _fresh(user).has_perm(ACT_FOR_ANY_USER_PERMISSION)
        read = _fresh(user).has_perm(READ_ANY_USER_PERMISSION) or act
        assert (can_act_for_any_user(_fresh(user)), can_read_any_user(_fresh(user))) == (act, read)


def test_a_fresh_user_is_answered_in_one_query(django_assert_num_queries: Any) -> None:
    # given a service account as a request loads it
    service = _fresh(_people()["service"])

    # when both questions are asked, then each is one query
    with django_assert_num_queries(2):
        assert can_act_for_any_user(service) is True
        assert can_read_any_user(service) is True


def test_permissions_already_loaded_are_used(django_assert_num_queries: Any) -> None:
    # given a support user whose permissions were loaded (as the admin does)
    support = _fresh(_people()["support"])
    support.get_all_permissions()

    # when asked, then no query
    with django_assert_num_queries(0):
        assert (can_act_for_any_user(support), can_read_any_user(support)) == (False, True)
