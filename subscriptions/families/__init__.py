"""Families: households sharing one family-plan subscription (models, services, API, admin)."""
