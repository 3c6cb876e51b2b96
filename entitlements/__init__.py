"""Entitlements: who may use which feature, granted, suspended and revoked on the subscription,
family and payment signals; cached per user and answered by the hot path. Builds on billing and
subscriptions."""
