"""Billing: what is sold and what was paid. Owns the catalog (`catalog/`), one-time payments and
refunds (`payments/`), everything that talks to Stripe or hears from it (`stripe/`: the gateway and
the inbound event inbox) and metered usage reported to Stripe's Billing Meters (`metering/`).
Imports no other domain app; subscriptions, entitlements and usage build on it.
"""
