"""Outbox and relay metrics.

The relay process counts what it publishes (served on EVENTS_RELAY_METRICS_PORT when set); every
process's /metrics also reads the backlog from the database at scrape time (OutboxCollector), so
the backlog is visible even when no relay runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

relay_published_total = Counter("events_relay_published_total", "Events acknowledged by the broker.")
relay_errors_total = Counter(
    "events_relay_publish_errors_total", "Events the broker did not acknowledge (kept for a retry)."
)
relay_batch_seconds = Histogram(
    "events_relay_batch_seconds",
    "Claim, publish, acknowledgement and marking of one batch.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
commit_to_ack_seconds = Histogram(
    "events_commit_to_broker_seconds",
    "From when an event was recorded (in its transaction) to the broker's acknowledgement.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


class OutboxCollector(Collector):
    """Backlog rows, the oldest one's age (the relay's lag) and the live relays, read at scrape."""

    def describe(self) -> Iterator[Any]:
        # Names only: registering the collector must not query the database (no app is ready yet).
        yield from self._families()

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("events_outbox_backlog_rows", "Events not yet acknowledged by the broker."),
            GaugeMetricFamily(
                "events_outbox_oldest_age_seconds",
                "Age of the oldest event not yet acknowledged (relay lag).",
            ),
            GaugeMetricFamily("events_relays_live", "Relay processes that reported recently."),
        )

    def collect(self) -> Iterator[Any]:
        from payments_project.events.selectors import events_backlog, relays_live

        try:
            backlog = events_backlog()
            live = relays_live()
        except Exception:
            logger.warning("outbox metrics unavailable", exc_info=True)
            return
        rows, age, relays = self._families()
        rows.add_metric([], backlog.rows)
        age.add_metric([], backlog.oldest_age_seconds())
        relays.add_metric([], len(live))
        yield from (rows, age, relays)
