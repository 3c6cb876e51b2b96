"""GET /api/v1/events/: a cursor feed of the outbox for service accounts and staff who may act for
any user."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from rest_framework.test import APIClient

from payments_project.accounts.tests.factories import UserFactory
from payments_project.events.models import DomainEvent
from payments_project.events.selectors import event_envelope
from payments_project.events.tests.factories import DomainEventFactory
from payments_project.tests.helpers import token_client

URL = "/api/v1/events/"


def _in_group(name: str, **fields: Any) -> Any:
    user = UserFactory(**fields)
    user.groups.add(Group.objects.get(name=name))
    return user


@pytest.fixture(autouse=True)
def _no_settle(settings: Any) -> None:
    settings.EVENTS_FEED_SETTLE_SECONDS = 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("role", "status"),
    [
        ("customer", 403),
        ("support", 403),
        ("finance", 403),
        ("staff with the permission", 200),
        ("service", 200),
        ("superuser", 200),
    ],
)
def test_only_callers_who_may_act_for_any_user_read_the_feed(role: str, status: int) -> None:
    users = {
        "customer": lambda: UserFactory(),
        "support": lambda: _in_group("support", is_staff=True),
        "finance": lambda: _in_group("finance", is_staff=True),
        "service": lambda: _in_group("service"),
        "superuser": lambda: UserFactory(is_staff=True, is_superuser=True),
    }
    if role == "staff with the permission":
        user = UserFactory(is_staff=True)
        user.user_permissions.add(Permission.objects.get(codename="act_for_any_user"))
    else:
        user = users[role]()
    DomainEventFactory()

    response = token_client(user).get(URL)

    assert response.status_code == status
    if status == 403:
        assert response.json()["error"]["code"] == "permission_denied"


@pytest.mark.django_db
def test_an_anonymous_caller_is_refused() -> None:
    response = APIClient().get(URL)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.django_db
def test_the_feed_pages_by_cursor_in_id_order() -> None:
    client = token_client(_in_group("service"))
    events = [DomainEventFactory() for _ in range(5)]

    first = client.get(URL, {"limit": 2}).json()
    second = client.get(URL, {"limit": 2, "after": first["next_after"]}).json()
    third = client.get(URL, {"limit": 2, "after": second["next_after"]}).json()
    after_last = client.get(URL, {"limit": 2, "after": third["next_after"]}).json()

    pages = [first, second, third]
    assert [[item["id"] for item in page["results"]] for page in pages] == [
        [str(events[0].pk), str(events[1].pk)],
        [str(events[2].pk), str(events[3].pk)],
        [str(events[4].pk)],
    ]
    assert [page["has_more"] for page in pages] == [True, True, False]
    assert after_last == {"results": [], "next_after": str(events[4].pk), "has_more": False}


@pytest.mark.django_db
def test_each_item_is_the_cloudevents_envelope_the_relay_publishes() -> None:
    event = DomainEventFactory(actor_type=DomainEvent.ActorType.STRIPE, actor_id="evt_1", sequence=3)

    item = token_client(_in_group("service")).get(URL).json()["results"][0]

    assert item == {**event_envelope(event), "id": str(event.pk)}
    assert (item["specversion"], item["type"], item["subject"], item["sequence"]) == (
        "1.0",
        "test.recorded",
        f"thing/{event.aggregate_id}",
        "3",
    )
    assert (item["actortype"], item["actorid"], item["data"]) == ("stripe", "evt_1", event.payload)


@pytest.mark.django_db
def test_the_feed_filters_by_type() -> None:
    DomainEventFactory()
    wanted = DomainEventFactory(type="payment.succeeded")

    body = token_client(_in_group("service")).get(URL, {"type": "payment.succeeded"}).json()

    assert [item["id"] for item in body["results"]] == [str(wanted.pk)]


@pytest.mark.django_db
def test_events_younger_than_the_settle_margin_wait(settings: Any) -> None:
    settings.EVENTS_FEED_SETTLE_SECONDS = 60
    DomainEventFactory()

    body = token_client(_in_group("service")).get(URL).json()

    assert body == {"results": [], "next_after": None, "has_more": False}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "field"),
    [({"after": "not-a-uuid"}, "after"), ({"limit": "0"}, "limit"), ({"limit": "501"}, "limit")],
)
def test_a_bad_cursor_or_limit_is_a_400(query: dict[str, str], field: str) -> None:
    response = token_client(_in_group("service")).get(URL, query)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert list(response.json()["error"]["fields"]) == [field]
