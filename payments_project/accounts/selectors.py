"""Reads of the accounts app."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from payments_project.accounts.models import AuditLogEntry

ACT_FOR_ANY_USER_PERMISSION = "accounts.act_for_any_user"


def can_act_for_any_user(user: Any) -> bool:
    """Service accounts and superusers may name another user (`user_id`) in API calls."""
    return bool(user and user.is_authenticated and user.has_perm(ACT_FOR_ANY_USER_PERMISSION))


def audit_entries_for(*, user_id: int) -> QuerySet[AuditLogEntry]:
    """Staff actions that concern one customer, newest first."""
    return AuditLogEntry.objects.filter(subject_user_id=user_id).select_related("actor")
