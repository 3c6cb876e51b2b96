"""Reads of the accounts app."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from payments_project.accounts.models import AuditLogEntry

ACT_FOR_ANY_USER_PERMISSION = "accounts.act_for_any_user"
# Viewing customers in the back-office (the support and finance roles) is also reading any
# user's data over the API.
READ_ANY_USER_PERMISSION = "accounts.view_customer"


def can_act_for_any_user(user: Any) -> bool:
    """Service accounts and superusers may name another user (`user_id`) in API calls, writes included."""
    return bool(user and user.is_authenticated and user.has_perm(ACT_FOR_ANY_USER_PERMISSION))


def can_read_any_user(user: Any) -> bool:
    """Who may name another user (`user_id`) in API reads: support and finance staff, service
    accounts and superusers. Writes for another user stay with `can_act_for_any_user`."""
    return bool(
        user
        and user.is_authenticated
        and (user.has_perm(READ_ANY_USER_PERMISSION) or user.has_perm(ACT_FOR_ANY_USER_PERMISSION))
    )


def audit_entries_for(*, user_id: int) -> QuerySet[AuditLogEntry]:
    """Staff actions that concern one customer, newest first."""
    return AuditLogEntry.objects.filter(subject_user_id=user_id).select_related("actor")
