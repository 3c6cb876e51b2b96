"""Subscriptions: the lifecycle mirrored from Stripe through one transition table and its history
(and the status vocabulary, `transitions.py`), checkout (`checkout/`), families sharing a plan
(`families/`) and failed renewals chased by dunning (`dunning/`). Builds on billing; sends the domain
signals the entitlements app receives."""
