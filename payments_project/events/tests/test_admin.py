"""The events in the staff console: searchable, payload and delivery state shown, and an audited
"publish again" for finance staff."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from payments_project.accounts.models import AuditLogEntry
from payments_project.accounts.tests.factories import UserFactory
from payments_project.events.models import DomainEvent
from payments_project.events.tests.factories import DomainEventFactory, RelayHeartbeatFactory

CHANGELIST = "/admin/events/domainevent/"


def _staff(group: str) -> Any:
    user = UserFactory(is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"q": "agg-7"}, ["agg-7"]),
        ({"q": "payment.succ"}, ["agg-8"]),
        ({"type": "payment.succeeded"}, ["agg-8"]),
    ],
)
def test_support_finds_events_by_aggregate_or_type(
    client: Client, query: dict[str, str], expected: list[str]
) -> None:
    DomainEventFactory(aggregate_id="agg-7")
    DomainEventFactory(aggregate_id="agg-8", type="payment.succeeded")
    client.force_login(_staff("support"))

    response = client.get(CHANGELIST, query)

    assert response.status_code == 200
    assert [row.aggregate_id for row in response.context["cl"].result_list] == expected


@pytest.mark.django_db
def test_an_events_page_shows_its_payload_envelope_and_delivery(client: Client) -> None:
    event = DomainEventFactory(
        published_at=timezone.now(), claimed_by="relay-1", payload={"n": 42, "note": "hi"}
    )
    RelayHeartbeatFactory()
    client.force_login(_staff("support"))

    page = client.get(f"{CHANGELIST}{event.pk}/change/").content.decode()

    assert "&quot;n&quot;: 42" in page
    assert "&quot;specversion&quot;: &quot;1.0&quot;" in page
    assert "by relay-1" in page
    assert client.get("/admin/events/relayheartbeat/").status_code == 200


@pytest.mark.django_db
def test_finance_publishes_an_event_again_and_it_is_audited(client: Client) -> None:
    finance = _staff("finance")
    event = DomainEventFactory(published_at=timezone.now(), claimed_by="relay-1")
    client.force_login(finance)

    response = client.post(
        CHANGELIST, {"action": "publish_again", "_selected_action": [str(event.pk)]}, follow=True
    )

    assert response.status_code == 200
    assert "1 event(s) queued for publication again." in response.content.decode()
    assert DomainEvent.objects.get(pk=event.pk).published_at is None
    assert AuditLogEntry.objects.get().action == "event.publish_again"


@pytest.mark.django_db
def test_support_is_not_offered_publish_again(client: Client) -> None:
    event = DomainEventFactory(published_at=timezone.now())
    client.force_login(_staff("support"))

    page = client.get(CHANGELIST)
    client.post(CHANGELIST, {"action": "publish_again", "_selected_action": [str(event.pk)]})

    assert "publish_again" not in page.content.decode()
    assert DomainEvent.objects.get(pk=event.pk).published_at is not None
    assert AuditLogEntry.objects.count() == 0
