"""`manage.py catalog_load FILE [--push]`: load the catalog from YAML/JSON, optionally push to Stripe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from billing.catalog.services import CatalogError, catalog_load, catalog_push_items, catalog_push_to_stripe
from payments_project.errors import DomainError


class Command(BaseCommand):
    help = "Load plans, features and pricing zones from a YAML or JSON file (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument(
            "--push", action="store_true", help="Also create the products and prices in Stripe."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"]
        try:
            text = path.read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc}") from exc
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise CommandError(f"{path} is not valid {path.suffix.lstrip('.')}: {exc}") from exc
        try:
            result = catalog_load(data=data)
        except CatalogError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"catalog loaded: created {result.created or 'nothing'}, updated {result.updated or 'nothing'}"
        )
        if not options["push"]:
            return
        items = catalog_push_items()
        try:
            with tqdm(total=len(items), desc="stripe prices", unit="price", file=self.stderr) as bar:
                created = catalog_push_to_stripe(items=items, progress=lambda _item: bar.update())
        except DomainError as exc:
            raise CommandError(f"pushing to Stripe failed: {exc.message}") from exc
        # `created` counts the metered prices too, which `items` (the plans' prices) does not list.
        self.stdout.write(f"stripe: {created} prices created (plans' and metered), the others already there")
