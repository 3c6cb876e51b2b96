"""Billing: what is sold and what was paid. Owns the catalog (`catalog/`), one-time payments and
refunds (`payments/`) and everything that talks to Stripe or hears from it (`stripe/`: the gateway and
the inbound event inbox). Imports no other domain app; subscriptions, entitlements and usage build on it.
"""
