"""Checkout: Stripe Checkout Sessions that start a subscription (or buy a one-time plan)."""
