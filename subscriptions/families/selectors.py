"""Reads of families."""

from __future__ import annotations

from subscriptions.families.models import Family


def family_for_user(*, user_id: int) -> Family | None:
    """The user's family with its members (two queries), or None."""
    return (
        Family.objects.filter(members__user_id=user_id)
        .select_related("owner")
        .prefetch_related("members__user")
        .first()
    )
