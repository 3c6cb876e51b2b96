"""Write the event catalog (docs/events.md, docs/events/*.json) from the declared event types."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from payments_project.events.catalog import catalog_stale, catalog_write


class Command(BaseCommand):
    help = "Generate docs/events.md and one JSON Schema per event type; --check fails when stale."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--docs", default=str(settings.BASE_DIR / "docs"), help="output folder")
        parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when stale")

    def handle(self, *args: Any, **options: Any) -> None:
        docs = Path(options["docs"])
        if options["check"]:
            stale = catalog_stale(docs)
            if stale:
                raise CommandError(f"stale event catalog ({', '.join(stale)}): run manage.py events_catalog")
            self.stdout.write("event catalog up to date")
            return
        written = catalog_write(docs)
        self.stdout.write(f"wrote {len(written)} files under {docs}")
