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

# Families: family=<Family>, user_id=<int> of the member who joined (the owner on creation) or left.
family_member_added = Signal()
family_member_removed = Signal()
