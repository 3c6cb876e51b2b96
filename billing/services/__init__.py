"""Writes of the billing app, one module per subject: catalog, payments, refunds, webhooks."""

from billing.services.catalog import (
    CatalogError,
    CatalogLoadResult,
    PushItem,
    catalog_load,
    catalog_push_items,
    catalog_push_to_stripe,
    plan_product_ensure,
    stripe_price_ensure,
    webhook_endpoint_ensure,
)

__all__ = [
    "CatalogError",
    "CatalogLoadResult",
    "PushItem",
    "catalog_load",
    "catalog_push_items",
    "catalog_push_to_stripe",
    "plan_product_ensure",
    "stripe_price_ensure",
    "webhook_endpoint_ensure",
]
