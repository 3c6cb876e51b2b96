"""Reads of payments."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from billing.models import Payment


def payment_list(*, user: Any, for_any_user: bool, filters: dict[str, Any]) -> QuerySet[Payment]:
    """Payments the caller may see: their own, or anyone's (staff/service) narrowed by filters."""
    payments = Payment.objects.select_related("user")
    if not for_any_user:
        payments = payments.filter(user=user)
    elif filters.get("user_id"):
        payments = payments.filter(user_id=filters["user_id"])
    if filters.get("customer"):
        payments = payments.filter(stripe_customer_id=filters["customer"])
    if filters.get("status"):
        payments = payments.filter(status=filters["status"])
    if filters.get("created_after"):
        payments = payments.filter(created_at__gte=filters["created_after"])
    if filters.get("created_before"):
        payments = payments.filter(created_at__lt=filters["created_before"])
    return payments.order_by("-created_at", "-pk")
