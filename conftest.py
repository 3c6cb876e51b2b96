"""Fixtures shared by every app's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import override_settings
from rest_framework.test import APIClient

from billing.stripe import gateway as stripe_gateway
from devtools.testing import StandinServer
from payments_project.events import ids as event_ids


def pytest_configure(config: pytest.Config) -> None:
    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" not in engine:
        raise pytest.UsageError(f"tests run on PostgreSQL only (DATABASE_URL gave {engine})")
    if "django_redis" not in settings.CACHES["default"]["BACKEND"]:
        raise pytest.UsageError("tests run on Redis only: set REDIS_URL")


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing() -> Iterator[None]:
    """Passwords hashed by one MD5 round instead of PBKDF2's million iterations, as Django's
    testing guide advises: the user factory hashes one per user, and that hashing was most of the
    suite's time on a slow machine. Logging in checks a password by the same code either way;
    the settings outside tests keep Django's default hashers."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def _clean_state() -> Iterator[None]:
    """Each test starts with an empty Redis test database (rate-limit counters included), a
    closed Stripe circuit breaker, and the event id clock where it was: a test that travels to
    2028 (time-machine) would otherwise leave every later event id in 2028, past the feed's
    cut-off (ids never go back in one process, as in production, where clocks do not jump years)."""
    cache.clear()
    stripe_gateway.breaker.close()
    clock = (event_ids._last_ms, event_ids._counter)
    yield
    stripe_gateway.breaker.close()
    event_ids._last_ms, event_ids._counter = clock


@pytest.fixture(scope="session")
def standin() -> Iterator[StandinServer]:
    """The Stripe stand-in (localstripe + devtools), on a free loopback port, for the session."""
    with StandinServer() as server:
        yield server


@pytest.fixture
def stripe_standin(standin: StandinServer, settings) -> Iterator[StandinServer]:  # type: ignore[no-untyped-def]
    """An empty stand-in that our gateway and dj-stripe both talk to for this test."""
    standin.reset()
    settings.STRIPE_API_BASE = standin.url
    stripe_gateway.client.cache_clear()
    stripe_gateway.configure_sdk_globals()
    yield standin
    stripe_gateway.client.cache_clear()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()
