"""Payment metrics, named as in the original design."""

from prometheus_client import Counter, Histogram

payment_total = Counter("payment_total", "Payment requests.", ["currency"])
payment_success_total = Counter("payment_success_total", "Payments that succeeded.", ["currency"])
payment_failed_total = Counter("payment_failed_total", "Payments that failed.", ["currency", "code"])
payment_duration_seconds = Histogram(
    "payment_duration_seconds", "Time to create (and confirm) a payment, Stripe calls included."
)
payment_amount = Counter(
    "payment_amount", "Sum of succeeded payments in minor units of their currency.", ["currency"]
)
