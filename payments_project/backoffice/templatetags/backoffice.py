"""Template filters of the back-office pages."""

from __future__ import annotations

from typing import Any

from django import template

from billing.models import PlanFeature
from billing.money import format_money, is_currency

register = template.Library()


@register.filter
def money(amount: Any, currency: str) -> str:
    """{{ amount|money:currency }}: minor units in the currency's own format (€8.99, ¥14,800)."""
    if not isinstance(amount, int) or isinstance(amount, bool) or not is_currency(str(currency)):
        return "-"
    return format_money(amount, str(currency))


_TONE = {
    "active": "bo-ok",
    "trialing": "bo-ok",
    "succeeded": "bo-ok",
    "done": "bo-ok",
    "recovered": "bo-ok",
    "past_due": "bo-warn",
    "unpaid": "bo-warn",
    "pending": "bo-warn",
    "processing": "bo-warn",
    "requires_action": "bo-warn",
    "suspended": "bo-warn",
    "incomplete": "bo-warn",
    "failed": "bo-bad",
    "dead": "bo-bad",
    "canceled": "bo-bad",
    "cancelled": "bo-bad",
    "revoked": "bo-bad",
    "incomplete_expired": "bo-bad",
}


@register.filter
def tone(status: Any) -> str:
    """The badge colour class of a status (green, amber, red, neutral)."""
    return _TONE.get(str(status), "")


_POLICIES = dict(PlanFeature.QuotaPolicy.choices)


@register.filter
def quota_policy(policy: Any) -> str:
    """What happens at a usage limit, in words ("Hard: refuse at the limit")."""
    return str(_POLICIES.get(str(policy), policy))


@register.filter
def count(value: Any) -> str:
    """{{ n|count }}: a whole number with thousands separators (1,000), "-" for anything else."""
    if not isinstance(value, int) or isinstance(value, bool):
        return "-"
    return f"{value:,}"
