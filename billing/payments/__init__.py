"""One-time payments (our row per Stripe PaymentIntent), staff status overrides and refunds, the
handlers of Stripe's payment, charge and refund events, and the payment domain signals."""
