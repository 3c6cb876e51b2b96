"""Under `make run` (DEMO_SETUP_EXPECTED) /health/ready waits for `manage.py demo_setup` to finish."""

from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any
from unittest.mock import ANY

import pytest
from django.core.management import call_command
from django.test import Client

from devtools.testing import StandinServer


@pytest.fixture
def expecting_demo_setup(settings: Any, tmp_path: Any) -> Any:
    """As scripts/run.sh sets it: the demo setup is expected, its marker not written yet."""
    settings.DEMO_SETUP_EXPECTED = True
    settings.DEMO_SETUP_MARKER = tmp_path / "demo-setup.done"
    return settings


@pytest.mark.django_db
def test_ready_is_503_until_the_demo_setup_has_finished_then_200(
    client: Client, stripe_standin: StandinServer, expecting_demo_setup: Any
) -> None:
    # given `make run` started and the demo setup has not finished
    before = client.get("/health/ready")
    live_before = client.get("/health/live")

    # when demo_setup runs to its end
    out = StringIO()
    call_command("demo_setup", wait_for_stripe=5, stdout=out, stderr=StringIO())
    after = client.get("/health/ready")

    # then readiness refused traffic before, naming what is not ready, and accepts it after
    assert before.status_code == 503
    assert before.json() == {
        "status": "down",
        "components": {
            "database": {"status": "up", "vendor": "postgresql", "latency_ms": ANY},
            "cache": {"status": "up", "backend": "redis", "latency_ms": ANY},
            "demo_setup": {
                "status": "down",
                "error": "demo setup has not finished yet (no demo-setup.done marker)",
                "latency_ms": ANY,
            },
        },
    }
    assert live_before.status_code == 200
    assert live_before.json() == {"status": "up"}
    assert "demo users (development only):" in out.getvalue()
    assert after.status_code == 200
    body = after.json()
    assert body["status"] == "up"
    assert set(body["components"]) == {"database", "cache", "demo_setup"}
    assert body["components"]["demo_setup"] == {
        "status": "up",
        "finished_at": expecting_demo_setup.DEMO_SETUP_MARKER.read_text().strip(),
        "latency_ms": ANY,
    }
    finished_at = datetime.fromisoformat(body["components"]["demo_setup"]["finished_at"])
    assert datetime.now(UTC) - finished_at < timedelta(minutes=1)


@pytest.mark.django_db
def test_ready_ignores_the_demo_setup_unless_it_is_expected(
    client: Client, settings: Any, tmp_path: Any
) -> None:
    # given the default (production, tests): no demo setup expected, and no marker anywhere
    settings.DEMO_SETUP_MARKER = tmp_path / "demo-setup.done"
    assert settings.DEMO_SETUP_EXPECTED is False

    # when readiness is asked
    response = client.get("/health/ready")

    # then it answers from the database and the cache alone
    assert response.status_code == 200
    assert response.json()["status"] == "up"
    assert set(response.json()["components"]) == {"database", "cache"}


@pytest.mark.django_db(transaction=True)
def test_demo_setup_prints_ready_last_once_the_server_answers_ready(
    stripe_standin: StandinServer, live_server: Any, expecting_demo_setup: Any
) -> None:
    # given the server being started answers /health/ready only once the marker exists
    # when demo_setup runs as Procfile.dev runs it
    out = StringIO()
    call_command(
        "demo_setup", wait_for_stripe=5, ready_url=f"{live_server.url}/", stdout=out, stderr=StringIO()
    )

    # then the demo users come first and the output ends with the one READY line
    lines = out.getvalue().strip().splitlines()
    assert lines[-1] == f"READY: {live_server.url}/ (admin, API, webhooks, worker and beat running)"
    assert sum(line.startswith("READY:") for line in lines) == 1
    assert lines.index("demo users (development only):") < len(lines) - 1
    assert expecting_demo_setup.DEMO_SETUP_MARKER.exists()
