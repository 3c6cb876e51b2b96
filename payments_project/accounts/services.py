"""Writes of the accounts app: the staff audit log."""

from __future__ import annotations

from typing import Any

from django.db import models

from payments_project.accounts.models import AuditLogEntry


def audit_record(
    *,
    actor: Any,
    action: str,
    target: models.Model | type[models.Model],
    subject_user_id: int | None = None,
    reason: str = "",
    data: dict[str, Any] | None = None,
) -> AuditLogEntry:
    """Record a staff action; call it inside the transaction that makes the change, so both
    commit or neither does. The target is the row acted on, or a model for an action on the whole
    table (e.g. pushing the catalog to Stripe): its id is then empty."""
    actor_id = getattr(actor, "pk", None) if getattr(actor, "is_authenticated", False) else None
    return AuditLogEntry.objects.create(
        actor_id=actor_id,
        action=action[:64],
        target_type=target._meta.label_lower[:64],
        target_id="" if isinstance(target, type) else str(target.pk)[:64],
        subject_user_id=subject_user_id,
        reason=reason[:1000],
        data=data or {},
    )
