"""Health endpoints: /health (every component), /health/ready, /health/live, /status."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import Gauge

from billing.stripe import gateway as stripe_gateway
from payments_project.celery import app as celery_app
from payments_project.events.kafka import kafka_enabled
from payments_project.events.selectors import events_backlog, relays_live

logger = logging.getLogger(__name__)
STARTED_AT = time.time()

health_component_up = Gauge(
    "health_component_up",
    "1 when the component answered its last health probe.",
    ["component"],
    multiprocess_mode="livemin",  # several web workers: down if any running one saw it down
)

Probe = Callable[[], dict[str, Any]]


def _timed(probe: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        extra = probe() or {}
        result = {"status": "up", **extra}
    except Exception as exc:  # noqa: BLE001 - a probe reports any failure as "down"
        result = {"status": "down", "error": f"{type(exc).__name__}: {exc}"[:300]}
    result["latency_ms"] = round((time.perf_counter() - start) * 1000, 2)
    return result


def probe_database() -> dict[str, Any]:
    def run() -> dict[str, Any]:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return {"vendor": connections["default"].vendor}

    return _timed(run)


def probe_cache() -> dict[str, Any]:
    backend = settings.CACHES["default"]["BACKEND"]
    if "django_redis" not in backend:
        return _timed(lambda: {"backend": "local-memory (embedded default; set REDIS_URL)"})

    def run() -> dict[str, Any]:
        from django_redis import get_redis_connection

        caches["default"]
        get_redis_connection("default").ping()
        return {"backend": "redis"}

    return _timed(run)


def probe_broker() -> dict[str, Any]:
    def run() -> dict[str, Any]:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=1)
            return {"transport": conn.transport_cls}

    return _timed(run)


def probe_stripe() -> dict[str, Any]:
    # No network call: Stripe's reachability as this process has seen it on real traffic.
    return {
        **stripe_gateway.stripe_health(),
        "mode": "stand-in" if settings.STRIPE_STANDIN else ("live" if settings.STRIPE_LIVE_MODE else "test"),
        "latency_ms": 0.0,
    }


def probe_demo_setup() -> dict[str, Any]:
    """Under `make run` (DEMO_SETUP_EXPECTED): has `manage.py demo_setup` finished? It writes the
    marker as its last step, after the demo catalog, its Stripe prices and the demo users exist."""
    marker = settings.DEMO_SETUP_MARKER
    start = time.perf_counter()
    result: dict[str, Any]
    try:
        result = {"status": "up", "finished_at": marker.read_text().strip()}
    except FileNotFoundError:
        result = {"status": "down", "error": f"demo setup has not finished yet (no {marker.name} marker)"}
    except OSError as exc:
        result = {"status": "down", "error": f"cannot read the {marker.name} marker: {exc.strerror}"}
    result["latency_ms"] = round((time.perf_counter() - start) * 1000, 2)
    return result


def probe_events() -> dict[str, Any]:
    """The outbox relay, from the database (no broker call): "degraded", never "down", when events
    wait too long, no relay reports, or the relays cannot reach Kafka; the API itself is fine."""

    def run() -> dict[str, Any]:
        backlog = events_backlog()
        age = round(backlog.oldest_age_seconds(), 1)
        facts: dict[str, Any] = {"backlog_rows": backlog.rows, "oldest_age_seconds": age}
        if not kafka_enabled():
            return {**facts, "relay": "off (KAFKA_BOOTSTRAP_SERVERS not set)"}
        relays = relays_live()
        states = sorted({relay.state for relay in relays})
        facts.update(relay=", ".join(states) or "none running", relays=len(relays))
        problems = []
        if age > settings.EVENTS_BACKLOG_DEGRADED_SECONDS:
            problems.append(f"oldest unpublished event is {age:.0f} s old")
        if not relays:
            problems.append("no relay has reported recently")
        if "broker_down" in states:
            problems.append("a relay cannot reach Kafka")
        if problems:
            return {**facts, "status": "degraded", "problems": problems}
        return facts

    result = _timed(run)
    if result["status"] == "down":  # the database is down: the database probe says so already
        result["status"] = "degraded"
    return result


def components() -> dict[str, dict[str, Any]]:
    result = {
        "database": probe_database(),
        "cache": probe_cache(),
        "broker": probe_broker(),
        "stripe": probe_stripe(),
        "events": probe_events(),
    }
    for name, value in result.items():
        health_component_up.labels(component=name).set(1 if value["status"] == "up" else 0)
    return result


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Every component; 503 as soon as one is down (half-open Stripe and a lagging event relay are only
    "degraded")."""
    parts = components()
    down = [name for name, part in parts.items() if part["status"] == "down"]
    degraded = [name for name, part in parts.items() if part["status"] == "degraded"]
    overall = "down" if down else ("degraded" if degraded else "up")
    return JsonResponse(
        {"status": overall, "components": parts, "version": settings.VERSION},
        status=503 if down else 200,
    )


@never_cache
@require_GET
def ready(request: HttpRequest) -> JsonResponse:
    """Can this instance serve traffic: the database and the cache must answer (and, under
    `make run`, the demo setup must have finished)."""
    parts = {"database": probe_database(), "cache": probe_cache()}
    if settings.DEMO_SETUP_EXPECTED:
        parts["demo_setup"] = probe_demo_setup()
    down = [name for name, part in parts.items() if part["status"] != "up"]
    return JsonResponse(
        {"status": "down" if down else "up", "components": parts}, status=503 if down else 200
    )


@never_cache
@require_GET
def live(request: HttpRequest) -> JsonResponse:
    """The process answers; no dependency is consulted, so a dead Redis never restarts us."""
    return JsonResponse({"status": "up"})


@never_cache
@require_GET
def status(request: HttpRequest) -> JsonResponse:
    """Version, uptime and a configuration summary; never a secret or a credential."""
    db = settings.DATABASES["default"]
    broker = celery_app.conf.broker_url or ""
    return JsonResponse(
        {
            "service": "payments-back-office",
            "version": settings.VERSION,
            "environment": settings.APP_ENV,
            "uptime_seconds": round(time.time() - STARTED_AT, 1),
            "config": {
                "database": db["ENGINE"].rsplit(".", 1)[-1],
                "cache": "redis"
                if "django_redis" in settings.CACHES["default"]["BACKEND"]
                else "local-memory",
                "broker": broker.split("://", 1)[0],
                "stripe": "stand-in"
                if settings.STRIPE_STANDIN
                else ("live" if settings.STRIPE_LIVE_MODE else "test"),
                "stripe_circuit_breaker": stripe_gateway.breaker_state(),
                "debug": settings.DEBUG,
                "rate_limits": settings.RATELIMIT_RATES if settings.RATELIMIT_ENABLE else "off",
            },
        }
    )
