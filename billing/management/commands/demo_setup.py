"""`make run`'s bootstrap: demo catalog (pushed to the Stripe stand-in), demo staff and customer.

Refuses to run in production: the demo passwords are printed and well known.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.authtoken.models import Token

DEMO_CATALOG = Path(__file__).resolve().parents[2] / "catalog" / "fixtures" / "demo_catalog.yaml"
DEMO_USERS: dict[str, dict[str, Any]] = {
    "admin": {"password": "admin-demo-password", "is_staff": True, "is_superuser": True},
    "support": {"password": "support-demo-password", "is_staff": True, "groups": ["support"]},
    "demo": {"password": "demo-customer-password"},
}


class Command(BaseCommand):
    help = "Load the demo catalog and users for `make run` (development only)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--wait-for-stripe", type=float, default=30.0, help="Seconds to wait.")

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
            user.is_staff = bool(spec.get("is_staff", False))
            user.is_superuser = bool(spec.get("is_superuser", False))
            user.set_password(str(spec["password"]))
            user.save()
            for name in spec.get("groups", []):
                user.groups.add(Group.objects.get(name=name))
            token, _ = Token.objects.get_or_create(user=user)
            lines.append(f"  {username:8} password {spec['password']:24} API token {token.key}")
        self.stdout.write("demo users (development only):\n" + "\n".join(lines))

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
