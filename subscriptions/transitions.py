"""The one table of allowed subscription status changes, and which domain signal each one sends.

Stripe's statuses map one to one, except Stripe's "canceled" which is our "cancelled"; "suspended"
is ours only (staff or dunning), Stripe never sends it.

The table is closed under composition on purpose: we apply only the newest state Stripe tells us
about (older deliveries are dropped), so a skipped intermediate state must not strand the mirror
(active -> past_due -> unpaid may arrive as active -> unpaid). What it refuses is what can never
happen: leaving an ended subscription, going back to incomplete, expiring anything but an
incomplete subscription, and suspending one that never started.
"""

from __future__ import annotations

from django.dispatch import Signal

from subscriptions import signals
from subscriptions.models import Subscription

S = Subscription.Status

# The status vocabulary, defined here only and named by what each set is for.
# Entitlements are active in these states (and a period can be extended).
GIVES_ACCESS = frozenset({S.TRIALING, S.ACTIVE})
# Started but not paid up: entitlements stay, suspended, until the subscription recovers or ends.
ACCESS_SUSPENDED = frozenset({S.PAST_DUE, S.UNPAID, S.PAUSED, S.SUSPENDED})
# Nothing more can happen to these.
ENDED = frozenset({S.CANCELLED, S.INCOMPLETE_EXPIRED})
# Still the customer's subscription: it holds the family's seats and forbids buying a second one.
HOLDS_FAMILY_SEATS = GIVES_ACCESS | ACCESS_SUSPENDED
# At most one per user and per family, enforced by the database (models.LIVE_STATUSES, the same set).
BLOCKS_NEW_CHECKOUT = GIVES_ACCESS | ACCESS_SUSPENDED
# A renewal failed and is not paid yet (dunning runs): a cancellation ends these now, and a
# payment that recovers one makes it active again.
RENEWAL_UNPAID = frozenset({S.PAST_DUE, S.UNPAID, S.SUSPENDED})

ALLOWED: dict[str, frozenset[str]] = {
    S.INCOMPLETE: frozenset(
        {S.TRIALING, S.ACTIVE, S.PAST_DUE, S.UNPAID, S.PAUSED, S.CANCELLED, S.INCOMPLETE_EXPIRED}
    ),
    S.TRIALING: frozenset({S.ACTIVE, S.PAST_DUE, S.UNPAID, S.PAUSED, S.SUSPENDED, S.CANCELLED}),
    S.ACTIVE: frozenset({S.TRIALING, S.PAST_DUE, S.UNPAID, S.PAUSED, S.SUSPENDED, S.CANCELLED}),
    S.PAST_DUE: frozenset({S.TRIALING, S.ACTIVE, S.UNPAID, S.PAUSED, S.SUSPENDED, S.CANCELLED}),
    S.UNPAID: frozenset({S.TRIALING, S.ACTIVE, S.PAST_DUE, S.PAUSED, S.SUSPENDED, S.CANCELLED}),
    S.PAUSED: frozenset({S.TRIALING, S.ACTIVE, S.PAST_DUE, S.UNPAID, S.SUSPENDED, S.CANCELLED}),
    S.SUSPENDED: frozenset({S.TRIALING, S.ACTIVE, S.PAST_DUE, S.UNPAID, S.PAUSED, S.CANCELLED}),
    S.CANCELLED: frozenset(),
    S.INCOMPLETE_EXPIRED: frozenset(),
}

STRIPE_STATUS = {
    "incomplete": S.INCOMPLETE,
    "incomplete_expired": S.INCOMPLETE_EXPIRED,
    "trialing": S.TRIALING,
    "active": S.ACTIVE,
    "past_due": S.PAST_DUE,
    "unpaid": S.UNPAID,
    "paused": S.PAUSED,
    "canceled": S.CANCELLED,
}


def is_allowed(from_status: str, to_status: str) -> bool:
    """Same status is not a transition (callers treat it as a no-op)."""
    return to_status in ALLOWED.get(from_status, frozenset())


def signals_for(from_status: str, to_status: str) -> list[Signal]:
    """The domain signals an allowed change sends, in order."""
    if to_status in ENDED:
        return [signals.subscription_cancelled]
    if to_status in GIVES_ACCESS:
        if from_status == S.INCOMPLETE:
            return [signals.subscription_activated]
        if from_status in ACCESS_SUSPENDED:
            return [signals.subscription_reactivated]
        return []
    if to_status in ACCESS_SUSPENDED:
        if from_status == S.INCOMPLETE:
            # Only reachable by a skipped delivery: it was granted in between, then suspended.
            return [signals.subscription_activated, signals.subscription_suspended]
        if from_status in GIVES_ACCESS:
            return [signals.subscription_suspended]
    return []
