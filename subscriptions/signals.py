"""Domain signals the subscriptions services send (subscriptions and families); the entitlements app
receives them.

Each is sent inside the sender's transaction with `subscription=<Subscription>` (and for
plan_changed also `previous_plan=<Plan>`), so grants commit or roll back with the change.
Receivers must be idempotent: the same signal twice leaves the same rows.
"""

from django.dispatch import Signal

subscription_activated = Signal()  # trialing/active for the first time: grant
subscription_renewed = Signal()  # a new period was paid: extend expiry
subscription_suspended = Signal()  # past_due/unpaid/paused/suspended: suspend access
subscription_reactivated = Signal()  # back to active after a suspension: restore
subscription_cancelled = Signal()  # cancelled or expired: revoke
subscription_plan_changed = Signal()  # upgrade/downgrade: replace the features
# The customer or staff asked to cancel (now or at the period end), sent after Stripe agreed, outside
# any transaction, with `actor=`: dunning stops chasing the unpaid invoices.
subscription_cancel_requested = Signal()
# Dunning keeps access while a renewal is retried: `until=<datetime>` (the case's cancel day), the
# usable rows must not expire before then (never shortened).
subscription_grace_extended = Signal()

# Families: family=<Family>, user_id=<int> of the member who joined (the owner on creation) or left.
family_member_added = Signal()
family_member_removed = Signal()
