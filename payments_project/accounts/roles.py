"""Staff and API roles as Django groups, kept in step with the code on every `migrate`.

- support: sees everything in the back-office, changes nothing that moves money.
- finance: support, plus what moves money or access: refunds, subscription and entitlement
  actions, catalog edits, reprocessing Stripe events, publishing domain events again.
- service: API accounts of other back-ends; may act for any user_id.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, Permission
from django.db.models import Q

VIEW_APPS = [
    "accounts",
    "events",
    "billing",
    "subscriptions",
    "entitlements",
    "usage",
    "djstripe",
    "django_celery_beat",
]
ROLES: dict[str, dict[str, list[str]]] = {
    "support": {"view_apps": VIEW_APPS, "perms": []},
    "finance": {
        "view_apps": VIEW_APPS,
        "perms": [
            "billing.refund_payment",
            "billing.set_payment_status",
            # The catalog: plans with their feature limits and list prices, zones with their
            # countries and prices. Deleting a plan or a zone stays with superusers (subscriptions
            # and payments point at them); an inline row (a limit, a price) may be removed.
            "billing.add_feature",
            "billing.change_feature",
            "billing.add_plan",
            "billing.change_plan",
            "billing.add_planfeature",
            "billing.change_planfeature",
            "billing.delete_planfeature",
            "billing.add_price",
            "billing.change_price",
            "billing.delete_price",
            "billing.add_pricingzone",
            "billing.change_pricingzone",
            "billing.add_zonecountry",
            "billing.change_zonecountry",
            "billing.delete_zonecountry",
            "billing.add_zoneprice",
            "billing.change_zoneprice",
            "billing.delete_zoneprice",
            "billing.change_stripeevent",
            "billing.send_meterreport",
            # Metered prices of plan features (per unit, in a zone's currency).
            "billing.add_meteredprice",
            "billing.change_meteredprice",
            "billing.delete_meteredprice",
            # a customer's pricing country, audited (docs/pricing-trust.md)
            "billing.change_customerpricing",
            "subscriptions.change_subscription",
            # Dunning: steer cases (retry now, pause, grace, resolve) and edit the policies.
            "subscriptions.change_dunningcase",
            "subscriptions.add_dunningpolicy",
            "subscriptions.change_dunningpolicy",
            "subscriptions.add_declinerule",
            "subscriptions.change_declinerule",
            "entitlements.change_entitlement",
            "events.publish_again",
            # Usage corrections: a signed adjustment with a reason, audited (never an edit).
            "usage.add_usageadjustment",
        ],
    },
    "service": {"view_apps": [], "perms": ["accounts.act_for_any_user"]},
}


def roles_ensure(**_: Any) -> None:
    """Create the groups and add their permissions; idempotent, never removes a staff-added one."""
    for name, spec in ROLES.items():
        group, _created = Group.objects.get_or_create(name=name)
        query = Q(content_type__app_label__in=spec["view_apps"], codename__startswith="view_")
        for dotted in spec["perms"]:
            app_label, codename = dotted.split(".", 1)
            query |= Q(content_type__app_label=app_label, codename=codename)
        group.permissions.add(*Permission.objects.filter(query))
