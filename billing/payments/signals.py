"""Domain signals of the billing app; the entitlements app grants and revokes on them.

Sent inside the sender's transaction; receivers must be idempotent.
"""

from django.dispatch import Signal

# A one-time payment succeeded: payment=<Payment> (grant payment.plan's features, if any).
payment_succeeded = Signal()
# Money went back: payment=<Payment>, refund=<Refund>, revoke_entitlements=<bool>.
payment_refunded = Signal()
