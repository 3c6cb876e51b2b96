"""Nobody joins a family without consent: the owner invites, the invitee accepts or declines,
an invitation expires, and the owner learns who the invitee is only once they accept."""

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from billing.catalog.tests.factories import PlanFactory
from payments_project.accounts.models import AuditLogEntry
from payments_project.accounts.tests.factories import UserFactory
from payments_project.tests.helpers import token_client
from subscriptions.families.services import family_member_add_by_staff
from subscriptions.models import FamilyInvitation, FamilyMember
from subscriptions.tests.factories import FamilyFactory, SubscriptionFactory


@pytest.fixture
def family() -> Any:
    """An owner whose family plan has 4 seats."""
    family = FamilyFactory(name="home")
    SubscriptionFactory(
        user=family.owner, family=family, plan=PlanFactory(code="fam", is_family=True, max_members=4)
    )
    return family


def _invite(family: Any, **invitee: Any) -> Any:
    return token_client(family.owner).post(
        f"/api/v1/families/{family.pk}/invitations", invitee, format="json"
    )


def _members(family: Any) -> list[int]:
    return sorted(FamilyMember.objects.filter(family=family).values_list("user_id", flat=True))


@pytest.mark.django_db
def test_an_invitee_by_user_id_accepts_and_only_then_the_owner_sees_them(family: Any) -> None:
    ana = UserFactory(username="ana")

    # when the owner invites ana by id
    sent = _invite(family, user_id=ana.pk)

    # then the answer says nothing about ana, and ana sees the invitation
    assert sent.status_code == 201
    assert (sent.json()["status"], sent.json()["invitee"]) == ("pending", None)
    received = token_client(ana).get("/api/v1/families/invitations")
    assert [(i["id"], i["family_name"], i["invited_by"]) for i in received.json()] == [
        (sent.json()["id"], "home", family.owner.username)
    ]

    # when ana accepts
    accepted = token_client(ana).post(f"/api/v1/families/invitations/{sent.json()['id']}/accept")

    # then she is a member, and the owner now sees who accepted
    assert (accepted.status_code, accepted.json()["status"]) == (200, "accepted")
    assert _members(family) == sorted([family.owner.pk, ana.pk])
    listed = token_client(family.owner).get(f"/api/v1/families/{family.pk}/invitations").json()
    assert listed[0]["invitee"] == {"user_id": ana.pk, "username": "ana"}


@pytest.mark.django_db
def test_an_invitee_by_email_declines_and_does_not_join(family: Any) -> None:
    bob = UserFactory(username="bob", email="Bob@Example.com")
    sent = _invite(family, email="bob@example.com")

    declined = token_client(bob).post(f"/api/v1/families/invitations/{sent.json()['id']}/decline")
    accept_after = token_client(bob).post(f"/api/v1/families/invitations/{sent.json()['id']}/accept")

    assert (declined.status_code, declined.json()["status"]) == (200, "declined")
    assert (accept_after.status_code, accept_after.json()["error"]["code"]) == (409, "invitation_closed")
    assert _members(family) == [family.owner.pk]
    listed = token_client(family.owner).get(f"/api/v1/families/{family.pk}/invitations").json()
    assert (listed[0]["status"], listed[0]["invitee"]) == ("declined", None)


@pytest.mark.django_db
def test_an_invitation_expires(family: Any, settings) -> None:  # type: ignore[no-untyped-def]
    settings.FAMILY_INVITATION_TTL_HOURS = 48
    cy = UserFactory()
    sent = _invite(family, user_id=cy.pk)

    # when cy answers three days later
    with time_machine.travel(timezone.now() + timedelta(days=3)):
        received = token_client(cy).get("/api/v1/families/invitations")
        late = token_client(cy).post(f"/api/v1/families/invitations/{sent.json()['id']}/accept")
        owner_view = token_client(family.owner).get(f"/api/v1/families/{family.pk}/invitations").json()

    # then the invitation is gone from their list, refused, and shown expired to the owner
    assert received.json() == []
    assert (late.status_code, late.json()["error"]["code"]) == (409, "invitation_expired")
    assert owner_view[0]["status"] == "expired"
    assert _members(family) == [family.owner.pk]


@pytest.mark.django_db
def test_an_expired_invitation_can_be_sent_again_and_accepted(family: Any, settings) -> None:  # type: ignore[no-untyped-def]
    # given an invitation to cy that expired
    settings.FAMILY_INVITATION_TTL_HOURS = 48
    cy = UserFactory()
    first = _invite(family, user_id=cy.pk).json()
    with time_machine.travel(timezone.now() + timedelta(days=3)):
        # when the owner invites cy again and cy accepts
        again = _invite(family, user_id=cy.pk)
        accepted = token_client(cy).post(f"/api/v1/families/invitations/{again.json()['id']}/accept")

    # then it is a new invitation, the expired one set aside, and cy is a member
    assert again.status_code == 201 and again.json()["id"] != first["id"]
    assert accepted.status_code == 200
    assert FamilyInvitation.objects.get(pk=first["id"]).status == "revoked"
    assert _members(family) == sorted([family.owner.pk, cy.pk])


@pytest.mark.django_db
def test_an_id_too_long_for_any_row_is_a_404(family: Any) -> None:
    huge = "9" * 5000
    client = token_client(family.owner)
    assert client.get(f"/api/v1/families/{huge}/invitations").status_code == 404
    assert client.post(f"/api/v1/families/invitations/{huge}/accept").status_code == 404
    assert client.delete(f"/api/v1/families/{family.pk}/members/{huge}").status_code == 404


@pytest.mark.django_db
def test_a_non_invitee_cannot_join_or_see_the_invitation(family: Any) -> None:
    ana, mallory = UserFactory(email="ana@example.com"), UserFactory(email="mallory@example.com")
    by_id = _invite(family, user_id=ana.pk).json()
    by_email = _invite(family, email="ana@example.com").json()

    answers = [
        token_client(mallory).post(f"/api/v1/families/invitations/{by_id['id']}/accept"),
        token_client(mallory).post(f"/api/v1/families/invitations/{by_email['id']}/accept"),
        token_client(mallory).post(f"/api/v1/families/invitations/{by_id['id']}/decline"),
        token_client(mallory).post(f"/api/v1/families/{family.pk}/members", {"user_id": mallory.pk}),
        token_client(mallory).post(f"/api/v1/families/{family.pk}/invitations", {"user_id": mallory.pk}),
    ]

    assert [a.status_code for a in answers] == [404, 404, 404, 403, 403]
    assert token_client(mallory).get("/api/v1/families/invitations").json() == []
    assert _members(family) == [family.owner.pk]
    assert set(FamilyInvitation.objects.values_list("status", flat=True)) == {"pending"}


@pytest.mark.django_db
def test_the_owner_cannot_add_a_member_directly(family: Any) -> None:
    ana = UserFactory()

    response = token_client(family.owner).post(f"/api/v1/families/{family.pk}/members", {"user_id": ana.pk})

    assert (response.status_code, response.json()["error"]["code"]) == (403, "invitation_required")
    assert _members(family) == [family.owner.pk]


@pytest.mark.django_db
def test_inviting_an_unknown_user_id_answers_as_any_invitation(family: Any) -> None:
    response = _invite(family, user_id=10**12)

    assert (response.status_code, response.json()["status"], response.json()["invitee"]) == (
        201,
        "pending",
        None,
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [{}, {"user_id": 1, "email": "a@b.c"}, {"email": "not-an-email"}, {"email": "a@" + "b" * 260 + ".com"}],
)
def test_bad_invitations_are_refused(family: Any, body: dict[str, Any]) -> None:
    response = _invite(family, **body)

    assert response.status_code == 400
    assert FamilyInvitation.objects.count() == 0


@pytest.mark.django_db
def test_staff_add_a_member_directly_audited(family: Any) -> None:
    staff, ana = UserFactory(is_staff=True, is_superuser=True), UserFactory()

    family_member_add_by_staff(family=family, user=ana, staff_user=staff, reason="support ticket 12")

    assert _members(family) == sorted([family.owner.pk, ana.pk])
    entry = AuditLogEntry.objects.get()
    assert (entry.actor_id, entry.action, entry.subject_user_id, entry.reason) == (
        staff.pk,
        "family_member_add",
        ana.pk,
        "support ticket 12",
    )
