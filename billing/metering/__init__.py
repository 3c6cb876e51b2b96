"""Metered billing: usage totals per closed window reported to Stripe Billing Meters, and reconciled."""
