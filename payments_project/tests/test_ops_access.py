"""/metrics, /status and /health for operators only in production; the probes stay open."""

import json

import pytest
from django.test import Client

from payments_project.tests.test_settings import PRODUCTION, _run

REQUESTS = (
    "import json, django; django.setup(); from django.test import Client;"
    "c = Client(HTTP_HOST='pay.example.com', REMOTE_ADDR='203.0.113.9');"
    "print(json.dumps({p: [c.get(p).status_code, c.get(p, HTTP_AUTHORIZATION='Bearer ' + t).status_code]"
    " for p, t in [('/metrics', 'wrong'), ('/status', 'ops-secret-token-1'), ('/health/live', ''),"
    " ('/health', 'wrong')]}))"
)


def test_production_settings_refuse_anonymous_requests_to_metrics_and_status() -> None:
    # given the production settings with an ops token
    result = _run({**PRODUCTION, "OPS_TOKEN": "ops-secret-token-1"}, "-c", REQUESTS)
    assert result.returncode == 0, result.stderr

    # then anonymous and wrong-token requests are refused, the token opens /status, liveness is open
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "/metrics": [401, 401],
        "/status": [401, 200],
        "/health/live": [200, 200],
        "/health": [401, 401],
    }


@pytest.fixture
def protected(settings):  # type: ignore[no-untyped-def]
    settings.OPS_PROTECTED = True
    settings.OPS_TOKEN = "tok-123"
    settings.OPS_ALLOWED_NETWORKS = ["10.1.0.0/16"]
    return settings


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/metrics", {}, 401),
        ("/status", {}, 401),
        ("/health", {}, 401),
        ("/metrics", {"HTTP_AUTHORIZATION": "Bearer tok-1234"}, 401),
        ("/metrics", {"HTTP_AUTHORIZATION": "Token tok-123"}, 401),
        ("/metrics", {"HTTP_AUTHORIZATION": "Bearer tok-123"}, 200),
        ("/status", {"HTTP_AUTHORIZATION": "bearer tok-123"}, 200),
        ("/status", {"REMOTE_ADDR": "10.1.7.7"}, 200),
        ("/status", {"REMOTE_ADDR": "10.2.0.1"}, 401),
        ("/health/live", {}, 200),
        ("/health/ready", {}, 200),
    ],
)
def test_ops_endpoints_need_the_token_or_an_allowed_network(protected, path, headers, status) -> None:  # type: ignore[no-untyped-def]
    response = Client().get(path, **headers)

    assert response.status_code == status
    if status == 401:
        assert response.json()["error"]["code"] == "not_authenticated"
        assert response["WWW-Authenticate"] == 'Bearer realm="ops"'


@pytest.mark.django_db
def test_ops_endpoints_are_open_when_not_protected(settings) -> None:  # type: ignore[no-untyped-def]
    settings.OPS_PROTECTED = False

    assert Client().get("/status").status_code == 200
