"""Dunning: failed renewals chased on our own schedule. Owns the cases opened by unpaid renewal
invoices, the retries the beat sweep claims, the decline rules that stop them, the per-plan policies
and their timeline, escalation to suspended and cancelled, recovery, the emails of each step, and
the API behind the frontend's banner (docs/dunning.md)."""
