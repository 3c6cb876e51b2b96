"""Dunning metrics (prometheus), in the style of billing/payments/metrics.py."""

from prometheus_client import Counter, Gauge

dunning_cases_open = Gauge(
    "dunning_cases_open",
    "Open dunning cases by stage, as counted by the last sweep.",
    ["stage"],
    multiprocess_mode="livemax",
)
dunning_retries_total = Counter(
    "dunning_retries_total",
    "Automatic and customer retries of unpaid invoices, by outcome (attempted, succeeded, failed, "
    "skipped: hard decline or card cap).",
    ["outcome"],
)
dunning_recovered_amount = Counter(
    "dunning_recovered_amount", "Sum recovered by dunning, in minor units of its currency.", ["currency"]
)
