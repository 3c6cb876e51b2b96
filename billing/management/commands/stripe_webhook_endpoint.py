"""Make sure dj-stripe has the endpoint row for STRIPE_WEBHOOK_SECRET; print its URL path last."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_variables

from billing.stripe.services import webhook_endpoint_ensure
from payments_project.errors import DomainError


class Command(BaseCommand):
    help = "Ensure the webhook endpoint row for STRIPE_WEBHOOK_SECRET exists (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="Public base URL.")

    @method_decorator(sensitive_variables("secret"))
    def handle(self, *args: Any, **options: Any) -> None:
        secret = settings.STRIPE_WEBHOOK_SECRET
        if not secret:
            raise CommandError("STRIPE_WEBHOOK_SECRET is not set (Stripe shows it as whsec_...)")
        try:
            endpoint = webhook_endpoint_ensure(secret=secret, base_url=options["base_url"])
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stderr.write(f"webhook endpoint {endpoint.id}: point Stripe at {endpoint.url}")
        self.stdout.write(f"/djstripe/webhook/{endpoint.djstripe_uuid}/")
