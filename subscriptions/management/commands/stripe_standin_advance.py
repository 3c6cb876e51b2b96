"""`manage.py stripe_standin_advance --days 3`: move the dev Stripe stand-in's clock forward.

Renewals that come due are invoiced and charged by the stand-in, which sends Stripe's webhooks
(a failing card: invoice.payment_failed, and dunning starts). Open dunning cases live the same
days: their dates move back by as much (our clock is the real one) and the dunning sweep runs
once, so their retries, suspension and cancellation happen as the days pass. Dev only: refused
against Stripe.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.db.models import F

from subscriptions.dunning.models import OPEN_STAGES, DunningAttempt, DunningCase
from subscriptions.dunning.services import dunning_sweep


class Command(BaseCommand):
    help = "Advance the Stripe stand-in's clock (dev only): renewals due by then are invoiced and charged."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=0, help="whole days (1 to 1830)")
        parser.add_argument("--hours", type=int, default=0, help="and/or hours")
        parser.add_argument("--no-dunning", action="store_true", help="leave open dunning cases as they are")

    def handle(self, *args: Any, **options: Any) -> None:
        base = str(settings.STRIPE_API_BASE).rstrip("/")
        if "stripe.com" in base:
            raise CommandError(
                "STRIPE_API_BASE is Stripe itself: this command only moves the dev stand-in's clock."
            )
        seconds = 86400 * int(options["days"]) + 3600 * int(options["hours"])
        if not 0 < seconds <= 1830 * 86400:
            raise CommandError("Advance by --days and/or --hours, 1 hour to 5 years.")
        try:
            answer = requests.post(f"{base}/_dev/clock/advance", json={"seconds": seconds}, timeout=30)
        except requests.RequestException as exc:
            raise CommandError(f"the stand-in at {base} did not answer: {exc}") from exc
        if answer.status_code != 200:
            raise CommandError(f"the stand-in refused: {answer.status_code} {answer.text[:300]}")
        body = answer.json()
        invoices = body.get("invoices") or []
        if not options["no_dunning"]:
            self._dunning_lives(timedelta(seconds=seconds))
        self.stdout.write(
            f"stand-in clock moved {seconds // 86400} day(s) {seconds % 86400 // 3600} hour(s); "
            f"{len(invoices)} renewal invoice(s) issued{': ' + ', '.join(invoices) if invoices else ''}"
        )

    def _dunning_lives(self, delta: timedelta) -> None:
        with transaction.atomic():
            cases = DunningCase.objects.filter(stage__in=OPEN_STAGES)
            DunningAttempt.objects.filter(case__in=cases, status=DunningAttempt.Status.SCHEDULED).update(
                due_at=F("due_at") - delta
            )
            moved = cases.update(opened_at=F("opened_at") - delta, cancel_at=F("cancel_at") - delta)
        result = dunning_sweep()
        self.stdout.write(
            f"dunning: {moved} open case(s) moved on; {result.claimed} retry(ies) and "
            f"{result.cancels} cancellation(s) queued"
        )
