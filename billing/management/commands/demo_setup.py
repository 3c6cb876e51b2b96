"""`make run`'s bootstrap: demo catalog (pushed to the Stripe stand-in), demo staff and customer.

Its last step writes settings.DEMO_SETUP_MARKER, which /health/ready waits for under `make run`
(DEMO_SETUP_EXPECTED). With --ready-url it then waits for that URL's /health/ready and for the
worker to have taken the webhook events the push caused, and prints the one READY line.
Refuses to run in production: the demo passwords are printed and well known.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.authtoken.models import Token

from billing.models import StripeEvent

DEMO_CATALOG = Path(__file__).resolve().parents[2] / "catalog" / "fixtures" / "demo_catalog.yaml"
DEMO_USERS: dict[str, dict[str, Any]] = {
    "admin": {"password": "admin-demo-password", "is_staff": True, "is_superuser": True},
    "support": {"password": "support-demo-password", "is_staff": True, "groups": ["support"]},
    "finance": {"password": "finance-demo-password", "is_staff": True, "groups": ["finance"]},
    "demo": {"password": "demo-customer-password", "first_name": "Demo", "last_name": "Customer"},
}


class Command(BaseCommand):
    help = "Load the demo catalog and users for `make run` (development only)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--wait-for-stripe", type=float, default=30.0, help="Seconds to wait.")
        parser.add_argument(
            "--ready-url",
            default="",
            help="Base URL of the server being started: print READY once it answers /health/ready.",
        )
        parser.add_argument(
            "--wait-for-ready", type=float, default=120.0, help="Seconds to wait for /health/ready."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PRODUCTION:
            raise CommandError("demo_setup is for development only")
        if settings.STRIPE_STANDIN:
            self._wait_for(settings.STRIPE_API_BASE, options["wait_for_stripe"])
        call_command("catalog_load", str(DEMO_CATALOG), push=True, stdout=self.stdout, stderr=self.stderr)
        user_model = get_user_model()
        lines = []
        for username, spec in DEMO_USERS.items():
            user, _ = user_model.objects.get_or_create(
                username=username, defaults={"email": f"{username}@example.com"}
            )
            user.first_name = str(spec.get("first_name", user.first_name))
            user.last_name = str(spec.get("last_name", user.last_name))
            user.is_staff = bool(spec.get("is_staff", False))
            user.is_superuser = bool(spec.get("is_superuser", False))
            user.set_password(str(spec["password"]))
            user.save()
            for name in spec.get("groups", []):
                user.groups.add(Group.objects.get(name=name))
            token, _ = Token.objects.get_or_create(user=user)
            lines.append(f"  {username:8} password {spec['password']:24} API token {token.key}")
        self.stdout.write("demo users (development only):\n" + "\n".join(lines))
        self._write_marker(settings.DEMO_SETUP_MARKER)
        if options["ready_url"]:
            self._announce_ready(options["ready_url"].rstrip("/"), options["wait_for_ready"])

    def _write_marker(self, marker: Path) -> None:
        """Last step: /health/ready (under `make run`) answers 200 from now on."""
        marker.parent.mkdir(parents=True, exist_ok=True)
        partial = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
        partial.write_text(datetime.now(UTC).isoformat(timespec="seconds") + "\n")
        partial.replace(marker)  # atomic: a probe never reads half a marker

    def _announce_ready(self, base_url: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._answers_200(base_url + "/health/ready"):
            if time.monotonic() > deadline:
                self.stderr.write(f"NOT READY: {base_url}/health/ready still not 200 after {seconds:.0f} s")
                return
            time.sleep(0.2)
        queued = self._wait_for_stripe_event_inbox(seconds=min(seconds, 60.0))
        if queued:
            running = f"admin, API and webhooks running; the worker has not yet taken {queued} events"
        else:
            running = "admin, API, webhooks, worker and beat running"
        self.stdout.write(f"READY: {base_url}/ ({running})")

    @staticmethod
    def _answers_200(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our URL
                return response.status == 200
        except OSError:  # refused, timed out, or an HTTP error status such as 503
            return False

    @staticmethod
    def _wait_for_stripe_event_inbox(seconds: float) -> int:
        """The catalog push makes Stripe (or the stand-in, a second later) send events; wait until
        none is waiting for the worker and none new came for 2 s. Returns how many still wait."""
        waiting = StripeEvent.objects.filter(
            status__in=[StripeEvent.Status.PENDING, StripeEvent.Status.PROCESSING]
        )
        deadline = time.monotonic() + seconds
        last_id = None
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            newest = StripeEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
            if newest != last_id or waiting.exists():
                last_id, quiet_since = newest, time.monotonic()
            elif time.monotonic() - quiet_since >= 2.0:
                return 0
            time.sleep(0.25)
        return waiting.count()

    def _wait_for(self, url: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "/v1/account", timeout=1):  # noqa: S310 - our URL
                    return
            except urllib.error.HTTPError:
                return  # it answered (even 401): it is up
            except OSError:
                time.sleep(0.3)
        raise CommandError(f"the Stripe stand-in did not answer at {url} within {seconds:.0f} s")
