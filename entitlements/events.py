"""The entitlements app's domain events: a feature granted, suspended or revoked for a holder."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from entitlements.models import Entitlement
from payments_project.events.envelope import rfc3339
from payments_project.events.registry import EventType, event_type, integer, string, timestamp
from payments_project.events.services import Actor, event_record

_ENTITLEMENT = {
    "entitlement_id": integer("Our entitlement id (the aggregate id).", minimum=1),
    "feature": string("Feature code.", max_length=64),
    "user_id": integer("The holder, when a user holds it.", minimum=1, nullable=True),
    "family_id": integer("The holder, when a family holds it.", minimum=1, nullable=True),
    "status": string("Status now.", enum=list(Entitlement.Status.values)),
    "source": string("Where it comes from.", enum=list(Entitlement.Source.values)),
    "subscription_id": integer("The subscription behind it, if any.", minimum=1, nullable=True),
    "plan": string("Plan code.", max_length=64, nullable=True),
    "source_ref": string("One-time purchases: the payment that granted it.", max_length=255),
    "limit": integer("Ceiling; null is unlimited.", nullable=True),
    "expires_at": timestamp("When it lapses unless renewed.", nullable=True),
}

ENTITLEMENT_GRANTED = event_type(
    name="entitlement.granted",
    aggregate="entitlement",
    description="A holder may use a feature (new, or active again after a suspension or a new grant).",
    properties=_ENTITLEMENT,
)
ENTITLEMENT_SUSPENDED = event_type(
    name="entitlement.suspended",
    aggregate="entitlement",
    description="Use of a feature is paused (e.g. the subscription is past due); it may come back.",
    properties=_ENTITLEMENT,
)
ENTITLEMENT_REVOKED = event_type(
    name="entitlement.revoked",
    aggregate="entitlement",
    description="A feature is taken away for good (subscription ended, plan changed, refund, staff).",
    properties=_ENTITLEMENT,
)
_BY_STATUS: dict[str, EventType] = {
    Entitlement.Status.ACTIVE: ENTITLEMENT_GRANTED,
    Entitlement.Status.SUSPENDED: ENTITLEMENT_SUSPENDED,
    Entitlement.Status.REVOKED: ENTITLEMENT_REVOKED,
}


def entitlement_payload(row: Entitlement) -> dict[str, Any]:
    return {
        "entitlement_id": row.pk,
        "feature": row.feature.code,
        "user_id": row.user_id,
        "family_id": row.family_id,
        "status": row.status,
        "source": row.source,
        "subscription_id": row.subscription_id,
        "plan": row.plan.code if row.plan_id and row.plan else None,
        "source_ref": row.source_ref,
        "limit": row.limit,
        "expires_at": rfc3339(row.expires_at) if row.expires_at else None,
    }


def entitlements_changed_record(*, ids: Iterable[int], actor: Any = None) -> None:
    """One event per row, by the status it now has (granted, suspended or revoked); in the caller's
    transaction, after the rows were written."""
    rows = Entitlement.objects.filter(pk__in=list(ids)).select_related("feature", "plan").order_by("pk")
    who = Actor.of_user(actor) if actor is not None else None
    for row in rows:
        event_record(
            event_type=_BY_STATUS[row.status],
            aggregate_id=row.pk,
            payload=entitlement_payload(row),
            actor=who,
        )
