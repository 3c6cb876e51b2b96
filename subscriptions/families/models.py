"""Families: a household sharing one family-plan subscription (the owner pays, members use it)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


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
