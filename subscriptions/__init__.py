"""Subscriptions: the lifecycle mirrored from Stripe through one transition table and its history,
checkout (`checkout/`) and families sharing a plan (`families/`). Builds on billing; sends the domain
signals the entitlements app receives."""
