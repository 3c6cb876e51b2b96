"""Give live subscriptions the metered items their plan bills now (a feature priced by usage after
they began, or a price dropped): `manage.py subscriptions_metered_items_sync --staff NAME [--plan CODE]`.

Each subscription goes through subscription_metered_items_sync (one Stripe update under an
idempotency key, recorded and audited as the staff member's); a rerun changes nothing more. The
same as the subscriptions admin's "Sync metered items with the plan" action, for all of them.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from payments_project.errors import DomainError
from subscriptions import services
from subscriptions.models import Subscription
from subscriptions.transitions import GIVES_ACCESS


class Command(BaseCommand):
    help = "Add the plan's metered prices missing from live subscriptions in Stripe (and drop stale ones)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--staff", required=True, help="Username of the finance staff member it acts as.")
        parser.add_argument("--plan", help="Only subscriptions of this plan code.")

    def handle(self, *args: Any, **options: Any) -> None:
        staff = get_user_model().objects.filter(username=options["staff"]).first()
        if staff is None:
            raise CommandError(f"No user {options['staff']!r}.")
        live = Subscription.objects.filter(status__in=GIVES_ACCESS).exclude(stripe_subscription_id=None)
        if options["plan"]:
            live = live.filter(plan__code=options["plan"])
        changed = unchanged = failed = 0
        for subscription in live.select_related("plan", "pricing_zone").order_by("pk").iterator():
            try:
                if services.subscription_metered_items_sync(subscription=subscription, staff_user=staff):
                    changed += 1
                else:
                    unchanged += 1
            except DomainError as exc:
                failed += 1
                self.stderr.write(f"subscription {subscription.pk}: {exc.code}: {exc.message}")
        self.stdout.write(f"metered items: {changed} changed, {unchanged} already in sync, {failed} failed")
        if failed:
            raise CommandError(f"{failed} subscription(s) could not be synced (above); a rerun retries them.")
