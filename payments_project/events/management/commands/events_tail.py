"""Print the events arriving on the topic, one line each: `python manage.py events_tail`."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from payments_project.events.envelope import envelope_parse
from payments_project.events.kafka import kafka_enabled, topic_read


class Command(BaseCommand):
    help = "Follow the events topic (partitions assigned directly; commits nothing)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from-beginning", action="store_true", help="start at the oldest message")
        parser.add_argument("--max", type=int, default=None, help="stop after this many events")
        parser.add_argument(
            "--idle-timeout", type=float, default=None, help="stop after this many idle seconds"
        )
        parser.add_argument("--json", action="store_true", help="print each envelope as it came")

    def handle(self, *args: Any, **options: Any) -> None:
        if not kafka_enabled():
            raise CommandError("KAFKA_BOOTSTRAP_SERVERS is not set")
        for message in topic_read(
            topic=settings.KAFKA_TOPIC,
            from_beginning=options["from_beginning"],
            idle_timeout=options["idle_timeout"],
            max_messages=options["max"],
        ):
            if options["json"]:
                self.stdout.write(message.value.decode())
                continue
            try:
                event = envelope_parse(message.value)
            except ValueError:
                self.stdout.write(
                    f"p{message.partition}@{message.offset} (not an envelope) {message.value[:200]!r}"
                )
                continue
            self.stdout.write(
                f"{event.get('time')} {event.get('type')} {event.get('subject')} #{event.get('sequence')} "
                f"by {event.get('actortype')}:{event.get('actorid')} {event.get('id')} "
                f"p{message.partition}@{message.offset} {_short(event.get('data'))}"
            )


def _short(data: Any) -> str:
    text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= 300 else text[:297] + "..."
