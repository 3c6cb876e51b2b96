"""The billing app's models, defined in its sub-packages and collected here for Django.

The app label stays `billing` (and so do the tables and migrations); import models from the
sub-package that owns them.
"""

from billing.catalog.models import (
    CustomerPricing,
    Feature,
    MeteredPrice,
    Plan,
    PlanFeature,
    Price,
    PricingZone,
    StripePrice,
    ZoneCountry,
    ZonePrice,
)
from billing.metering.models import (
    MeterReconciliation,
    MeterReconciliationLine,
    MeterReport,
    StripeMeter,
)
from billing.payments.models import Payment, PaymentStatusChange, Refund
from billing.stripe.models import StripeEvent

__all__ = [
    "CustomerPricing",
    "Feature",
    "MeterReconciliation",
    "MeterReconciliationLine",
    "MeterReport",
    "MeteredPrice",
    "Payment",
    "PaymentStatusChange",
    "Plan",
    "PlanFeature",
    "Price",
    "PricingZone",
    "Refund",
    "StripeEvent",
    "StripeMeter",
    "StripePrice",
    "ZoneCountry",
    "ZonePrice",
]
