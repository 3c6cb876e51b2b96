"""Reads for the customer page: one customer seen across every domain app, and the global search."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Prefetch, Q
from django.utils import timezone
from djstripe import models as djstripe_models

from billing.models import Payment, Refund, StripeEvent
from entitlements.models import Entitlement
from entitlements.selectors import entitlement_check
from payments_project.accounts.models import AuditLogEntry
from payments_project.accounts.selectors import audit_entries_for
from payments_project.ids import int_id
from subscriptions.dunning.models import DunningCase
from subscriptions.dunning.selectors import dunning_cases_for_user
from subscriptions.families.models import Family
from subscriptions.families.selectors import family_for_user
from subscriptions.models import Subscription, SubscriptionHistory
from usage.selectors import UsageSummary, subject_of, usage_summaries_for_user

# How many rows of each list the page shows; the section links to the full, filtered list.
PAGE_ROWS = 50
_STRIPE_ID = re.compile(r"^(cus|sub|pi|ch|in|evt)_[A-Za-z0-9_]+$")


def _stripe_id_user_ids(stripe_id: str) -> set[int]:
    """The users a Stripe id belongs to, from our rows and from dj-stripe's mirror."""
    prefix = stripe_id.split("_", 1)[0]
    ids: set[int] = set()

    def subscribers(model: Any, **lookup: str) -> None:
        ids.update(
            uid
            for uid in model.objects.filter(**lookup).values_list("customer__subscriber_id", flat=True)
            if uid
        )

    if prefix == "cus":
        ids.update(
            uid
            for uid in djstripe_models.Customer.objects.filter(id=stripe_id).values_list(
                "subscriber_id", flat=True
            )
            if uid
        )
        ids.update(Payment.objects.filter(stripe_customer_id=stripe_id).values_list("user_id", flat=True))
    elif prefix == "sub":
        ids.update(
            Subscription.objects.filter(stripe_subscription_id=stripe_id).values_list("user_id", flat=True)
        )
        ids.update(Payment.objects.filter(stripe_subscription_id=stripe_id).values_list("user_id", flat=True))
        subscribers(djstripe_models.Subscription, id=stripe_id)
    elif prefix == "pi":
        ids.update(
            Payment.objects.filter(stripe_payment_intent_id=stripe_id).values_list("user_id", flat=True)
        )
        subscribers(djstripe_models.PaymentIntent, id=stripe_id)
    elif prefix == "ch":
        ids.update(Payment.objects.filter(stripe_charge_id=stripe_id).values_list("user_id", flat=True))
        subscribers(djstripe_models.Charge, id=stripe_id)
    elif prefix == "in":
        ids.update(Payment.objects.filter(stripe_invoice_id=stripe_id).values_list("user_id", flat=True))
        subscribers(djstripe_models.Invoice, id=stripe_id)
    elif prefix == "evt":
        customers = StripeEvent.objects.filter(stripe_event_id=stripe_id).values_list(
            "stripe_customer_id", flat=True
        )
        for customer_id in customers:
            if customer_id:
                ids |= _stripe_id_user_ids(customer_id)
    return ids


def customer_search_filter(query: str) -> Q | None:
    """The users a search box entry names: a user id, any Stripe id (cus_, sub_, pi_, ch_, in_,
    evt_), or an email, username or name (each word must match). None: no filter (empty entry)."""
    text = query.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        user_id = int_id(text)
        return Q(pk=user_id) if user_id else Q(pk__in=[])
    if _STRIPE_ID.match(text):
        return Q(pk__in=_stripe_id_user_ids(text))
    if "@" in text:
        return Q(email__icontains=text)
    condition = Q()
    for word in text.split()[:5]:
        condition &= (
            Q(username__icontains=word)
            | Q(email__icontains=word)
            | Q(first_name__icontains=word)
            | Q(last_name__icontains=word)
        )
    return condition


def customer_found(*, query: str) -> int | None:
    """The one customer a search names, if it names exactly one: an exact email wins over other
    addresses containing it (alice@example.com, not malice@example.com)."""
    text = query.strip()
    users = get_user_model().objects
    if "@" in text:
        exact = list(users.filter(email__iexact=text).values_list("pk", flat=True)[:2])
        if len(exact) == 1:
            return int(exact[0])
    condition = customer_search_filter(text)
    found = list(users.filter(condition).values_list("pk", flat=True)[:2]) if condition is not None else []
    return int(found[0]) if len(found) == 1 else None


@dataclass
class CustomerOverview:
    """Everything the customer page shows about one user."""

    user: Any
    stripe_customers: list[Any]
    subscriptions: list[Subscription]
    payments: list[Payment]
    payments_total: int
    entitlements: list[Entitlement]
    family: Family | None
    events: list[StripeEvent]
    audit: list[AuditLogEntry]
    usage: list[UsageSummary] = field(default_factory=list)
    dunning_cases: list[DunningCase] = field(default_factory=list)
    check: dict[str, Any] | None = None
    facts: dict[str, Any] = field(default_factory=dict)


def customer_overview(*, user_id: int) -> CustomerOverview | None:
    """The customer page's data, a bounded number of queries whatever the customer's history."""
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        return None
    stripe_customers = list(
        djstripe_models.Customer.objects.filter(subscriber_id=user_id).order_by("-created")
    )
    subscriptions = list(
        Subscription.objects.filter(user_id=user_id)
        .select_related("plan", "pricing_zone", "family")
        .prefetch_related(
            Prefetch(
                "history",
                queryset=SubscriptionHistory.objects.select_related("staff_user").order_by(
                    "created_at", "pk"
                ),
            )
        )
        .order_by("-created_at", "-pk")
    )
    payments_qs = Payment.objects.filter(user_id=user_id)
    payments = list(
        payments_qs.select_related("plan")
        .prefetch_related(
            Prefetch(
                "refunds", queryset=Refund.objects.select_related("created_by").order_by("created_at", "pk")
            )
        )
        .order_by("-created_at", "-pk")[:PAGE_ROWS]
    )
    family = family_for_user(user_id=user_id)
    holders = Q(user_id=user_id) | (Q(family_id=family.pk) if family else Q(pk__in=[]))
    entitlements = list(
        Entitlement.objects.filter(holders)
        .select_related("feature", "plan", "subscription", "family")
        .order_by("feature__code", "-granted_at")[:PAGE_ROWS]
    )
    customer_ids = [c.id for c in stripe_customers] + list(
        payments_qs.exclude(stripe_customer_id="").values_list("stripe_customer_id", flat=True).distinct()
    )
    object_ids = [s.stripe_subscription_id for s in subscriptions if s.stripe_subscription_id]
    events = list(
        StripeEvent.objects.filter(
            Q(stripe_customer_id__in=customer_ids) | Q(object_id__in=object_ids)
        ).order_by("-received_at", "-pk")[:PAGE_ROWS]
    )
    # The usage lists' filters: the customer's own records, and the counters of their own quota
    # and of their family's pool.
    subjects = [subject_of(user_id=user_id)] + ([subject_of(family_id=family.pk)] if family else [])
    return CustomerOverview(
        user=user,
        stripe_customers=stripe_customers,
        subscriptions=subscriptions,
        payments=payments,
        payments_total=payments_qs.count(),
        entitlements=entitlements,
        family=family,
        events=events,
        audit=list(audit_entries_for(user_id=user_id)[:PAGE_ROWS]),
        usage=usage_summaries_for_user(user_id=user_id, at=timezone.now()),
        dunning_cases=dunning_cases_for_user(user_id=user_id, limit=PAGE_ROWS),
        facts={"stripe_customer_ids": sorted(set(customer_ids)), "usage_subjects": subjects},
    )


def customer_entitlement_check(*, user_id: int, feature: str) -> dict[str, Any]:
    """What the product's API answers for this customer and feature now (read-only: the same
    check, including its cache, that the API runs)."""
    return entitlement_check(user_id=user_id, features=[feature[:64]])[0]
