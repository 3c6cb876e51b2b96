import pytest
from django.test import Client, override_settings

CLOSED_PORT_REDIS = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        # Nothing listens on port 1: the connection is refused at once.
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
    }
}


@pytest.mark.django_db
def test_health_reports_every_component_up(client: Client) -> None:
    response = client.get("/health")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "up"
    assert set(body["components"]) == {"database", "cache", "broker", "stripe", "events"}
    assert body["components"]["database"]["status"] == "up"
    assert body["components"]["database"]["vendor"] == "postgresql"
    assert body["components"]["cache"] == {
        "status": "up",
        "backend": "redis",
        "latency_ms": body["components"]["cache"]["latency_ms"],
    }
    assert body["components"]["broker"]["status"] == "up"
    assert body["components"]["stripe"]["circuit_breaker"] == "closed"
    assert all(part["latency_ms"] >= 0 for part in body["components"].values())


@pytest.mark.django_db
@override_settings(CACHES=CLOSED_PORT_REDIS)
def test_redis_down_shows_in_health_and_readiness_but_not_liveness(client: Client) -> None:
    # given REDIS_URL points at a closed port
    # when the probes are asked
    health = client.get("/health")
    ready = client.get("/health/ready")
    live = client.get("/health/live")

    # then /health names the cache as down, readiness refuses traffic, liveness stays up
    assert health.status_code == 503
    assert health.json()["status"] == "down"
    assert health.json()["components"]["cache"]["status"] == "down"
    assert "ConnectionError" in health.json()["components"]["cache"]["error"]
    assert health.json()["components"]["database"]["status"] == "up"
    assert ready.status_code == 503
    assert ready.json()["components"]["cache"]["status"] == "down"
    assert live.status_code == 200
    assert live.json() == {"status": "up"}


@pytest.mark.django_db
def test_ready_is_200_when_database_and_cache_answer(client: Client) -> None:
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["status"] == "up"


@pytest.mark.django_db
def test_status_has_version_uptime_and_no_secrets(client: Client, settings) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/status")
    body = response.json()
    text = response.content.decode()
    assert response.status_code == 200
    assert body["version"] == settings.VERSION
    assert body["uptime_seconds"] >= 0
    assert body["config"]["database"] == "postgresql"
    assert body["config"]["cache"] == "redis"
    assert body["config"]["broker"] == "redis"
    assert settings.SECRET_KEY not in text
    assert settings.STRIPE_SECRET_KEY not in text
    assert "127.0.0.1:5432" not in text


@pytest.mark.django_db
def test_metrics_exposes_prometheus_text_with_the_breaker_state(client: Client) -> None:
    response = client.get("/metrics")
    text = response.content.decode()
    assert response.status_code == 200
    assert 'circuit_breaker_state{name="stripe"} 0.0' in text
    assert "django_http_requests_total_by_method_total" in text
