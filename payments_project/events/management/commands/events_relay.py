"""Publish the outbox to Kafka until stopped (SIGTERM/SIGINT): `python manage.py events_relay`."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from prometheus_client import start_http_server

from payments_project.events.kafka import kafka_enabled
from payments_project.events.relay import Relay, default_relay_id


class Command(BaseCommand):
    help = "Relay domain events from the outbox to Kafka (KAFKA_BOOTSTRAP_SERVERS, KAFKA_TOPIC)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--relay-id",
            default=default_relay_id(),
            help="lease owner name (default host:pid); restarted with the same name, a relay takes its "
            "own leased rows back at once instead of after the lease",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not kafka_enabled():
            # Events stay in the outbox (admin, GET /api/v1/events/); nothing to relay to.
            self.stdout.write("events relay off: KAFKA_BOOTSTRAP_SERVERS is not set")
            return
        if settings.EVENTS_RELAY_METRICS_PORT:
            start_http_server(settings.EVENTS_RELAY_METRICS_PORT)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        relay = Relay(relay_id=options["relay_id"][:128])
        self.stdout.write(
            f"events relay {relay.relay_id}: {settings.KAFKA_BOOTSTRAP_SERVERS} topic {relay.config.topic}"
        )
        relay.run(stop)
