"""Prometheus metrics of the entitlement hot path."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

entitlement_checks_total = Counter(
    "entitlement_checks_total", "Entitlement checks answered, per feature asked.", ["result"]
)
entitlement_cache_hits_total = Counter(
    "entitlement_cache_hits_total", "Checks answered from a warm Redis snapshot."
)
entitlement_cache_misses_total = Counter(
    "entitlement_cache_misses_total", "Checks that had to rebuild the snapshot from the database."
)
entitlement_cache_fallbacks_total = Counter(
    "entitlement_cache_fallbacks_total", "Redis unreachable: answered from the database instead."
)
entitlement_check_duration_seconds = Histogram(
    "entitlement_check_duration_seconds",
    "Time to answer a single or bulk entitlement check.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)

# Bound once: `.labels()` is a locked dict lookup, paid on every check otherwise.
entitlement_checks_allowed = entitlement_checks_total.labels(result="allowed")
entitlement_checks_denied = entitlement_checks_total.labels(result="denied")
