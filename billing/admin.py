"""The billing app's admin pages, registered by its sub-packages."""

from billing.catalog import admin as catalog_admin
from billing.metering import admin as metering_admin
from billing.payments import admin as payments_admin
from billing.stripe import admin as stripe_admin

__all__ = ["catalog_admin", "metering_admin", "payments_admin", "stripe_admin"]
