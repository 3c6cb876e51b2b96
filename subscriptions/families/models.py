"""Families: a household sharing one family-plan subscription (the owner pays, members use it)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower


class Family(models.Model):
    """A household sharing a family plan: the owner pays, every member is entitled."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_families"
    )
    name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "families"
        constraints = [models.UniqueConstraint(fields=["owner"], name="family_one_per_owner")]

    def __str__(self) -> str:
        return self.name or f"family of {self.owner}"


class FamilyMember(models.Model):
    """A user belongs to at most one family (the owner is a member too)."""

    family = models.ForeignKey(Family, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="family_membership"
    )
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user"], name="familymember_one_family_per_user")]

    def __str__(self) -> str:
        return f"{self.user} in {self.family}"


class FamilyInvitation(models.Model):
    """An owner's invitation to join their family, by user id or email: the invitee accepts or
    declines it before its expiry, and only then does the owner see who they are. Nothing about
    the invitee is checked at creation, so an invitation tells the owner nothing about an account."""

    class Status(models.TextChoices):
        PENDING = "pending"
        ACCEPTED = "accepted"
        DECLINED = "declined"
        REVOKED = "revoked"

    family = models.ForeignKey(Family, on_delete=models.CASCADE, related_name="invitations")
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    # One of the two: a user id (no foreign key, so inviting a missing id answers as any other)
    # or an email, matched case-insensitively against the accepting user's.
    invitee_user_id = models.PositiveBigIntegerField(null=True, blank=True)
    invitee_email = models.EmailField(max_length=254, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    responded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                name="familyinvitation_has_invitee",
                condition=models.Q(invitee_user_id__isnull=False) | ~models.Q(invitee_email=""),
            ),
            models.UniqueConstraint(
                fields=["family", "invitee_user_id"],
                condition=models.Q(status="pending", invitee_user_id__isnull=False),
                name="familyinvitation_one_pending_per_user",
            ),
            models.UniqueConstraint(
                models.F("family"),
                Lower("invitee_email"),
                condition=models.Q(status="pending") & ~models.Q(invitee_email=""),
                name="familyinvitation_one_pending_per_email",
            ),
        ]
        indexes = [models.Index(fields=["invitee_user_id", "status"], name="familyinvitation_invitee")]

    def __str__(self) -> str:
        return f"invitation {self.pk} to {self.family}"
