"""The single-event hot path of POST usage/events (usage.hotpath): the DRF action's answers, faster."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import override_settings
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from entitlements import hotpath as entitlement_hotpath
from entitlements.periods import period_bounds
from payments_project.accounts.tests.factories import UserFactory
from usage.models import UsageCounter, UsageRecord

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/usage/events/"
COMPARED_HEADERS = ("Content-Type", "Retry-After", "Allow", "Vary")


@pytest.fixture(autouse=True)
def _no_hints() -> Iterator[None]:
    entitlement_hotpath._HINTS.clear()
    yield
    entitlement_hotpath._HINTS.clear()


def _token_client(user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def _drf_client(user: Any) -> APIClient:
    """A client whose requests all go to the DRF action (no hot path in its middleware)."""
    with override_settings(HOT_PATHS={}):
        client = _token_client(user)
        client.get("/health/live")  # the client's handler loads its middleware now, without the route
    return client


def _headers(response: Any) -> dict[str, str | None]:
    return {name: response.get(name) for name in COMPARED_HEADERS}


def _warm(user: Any) -> APIClient:
    """A token client whose token the DRF path has cached (its first request)."""
    client = _token_client(user)
    warming = client.get("/api/v1/usage/summary/", {"feature": "api_calls"})
    assert warming.status_code == 200
    return client


def test_a_warm_event_takes_one_redis_round_trip_and_one_statement_of_its_own(
    quota: Callable[..., Any], redis_commands: list[tuple[Any, ...]], django_assert_num_queries: Any
) -> None:
    # given a warm customer with 10 units a period, whose quota this process has read
    user = quota(limit=10)
    client = _warm(user)
    client.post(EVENTS, {"feature": "api_calls", "quantity": 1, "idempotency_key": "w"}, format="json")
    redis_commands.clear()

    # when they record 4 units more (their first warm request read the token's user: now known):
    # ONE statement checks the quota's rows, inserts the record and counts it (in the test's
    # transaction it runs in a savepoint: two statements more, none outside tests)
    with django_assert_num_queries(3):
        response = client.post(
            EVENTS, {"feature": "api_calls", "quantity": 4, "idempotency_key": "a"}, format="json"
        )

    # then one script (token + rate-limit counter); the counter's mirror waits for the commit
    record = UsageRecord.objects.get(idempotency_key="a")
    start, end = period_bounds(
        reset_period="billing_period", anchor=user.subscription.current_period_start, at=timezone.now()
    )
    assert end is not None
    assert [command[0] for command in redis_commands] == ["EVALSHA"]
    assert response.status_code == 201
    assert response["Allow"] == "POST, OPTIONS"
    assert response.json() == {
        "status": "recorded",
        "code": None,
        "message": "",
        "record_id": record.pk,
        "quantity": 4,
        "over_limit": False,
        "period_start": start.isoformat().replace("+00:00", "Z"),
        "limit": 10,
        "used": 5,
        "remaining": 5,
        "resets_at": end.isoformat().replace("+00:00", "Z"),
    }
    counter = UsageCounter.objects.get()
    assert (counter.used, counter.reserved, counter.seq, counter.allowance) == (5, 0, 2, 10)


def test_replays_refusals_and_conflicts_answer_the_bytes_of_the_drf_action(quota: Callable[..., Any]) -> None:
    # given a warm customer with 10 units, and the same customer through DRF only
    user = quota(limit=10)
    fast = _warm(user)
    drf = _drf_client(user)
    body = {"feature": "api_calls", "quantity": 6, "idempotency_key": "k", "operation": "upload"}
    first = drf.post(EVENTS, body, format="json")

    # when both replay it, spend past the quota, and reuse the key with another body
    answers = {}
    for name, client in (("fast", fast), ("drf", drf)):
        answers[name] = [
            client.post(EVENTS, body, format="json"),
            client.post(
                EVENTS,
                {"feature": "api_calls", "quantity": 5, "idempotency_key": f"{name}-over"},
                format="json",
            ),
            client.post(EVENTS, {**body, "quantity": 7}, format="json"),
        ]

    # then the same statuses, bytes and headers
    assert first.status_code == 201
    assert [a.status_code for a in answers["fast"]] == [200, 429, 409]
    for fast_answer, drf_answer in zip(answers["fast"], answers["drf"], strict=True):
        assert fast_answer.content == drf_answer.content
        assert _headers(fast_answer) == _headers(drf_answer)
    assert answers["fast"][1].json()["error"]["code"] == "quota_exceeded"
    assert UsageRecord.objects.count() == 1
    assert UsageCounter.objects.get().used == 6


def test_other_requests_go_on_to_the_drf_action(
    quota: Callable[..., Any], redis_commands: list[tuple[Any, ...]]
) -> None:
    # given a warm customer, another user and a service account
    user = quota(limit=100)
    client = _warm(user)
    other = UserFactory()
    service: Any = UserFactory()
    service.groups.add(Group.objects.get(name="service"))

    # when the customer names another user, sends what only DRF's serializer reads, or bad input
    # (each would be answered by DRF: the tokens' snapshots are read, then DRF's own checks)
    for_other = client.post(
        EVENTS, {"feature": "api_calls", "idempotency_key": "o", "user_id": other.pk}, format="json"
    )
    with_time = client.post(
        EVENTS,
        {"feature": "api_calls", "idempotency_key": "t", "occurred_at": "2020-01-01T00:00:00Z"},
        format="json",
    )
    zero = client.post(EVENTS, {"feature": "api_calls", "idempotency_key": "z", "quantity": 0}, format="json")
    own_id = client.post(
        EVENTS, {"feature": "api_calls", "idempotency_key": "i", "user_id": user.pk}, format="json"
    )
    by_service = _token_client(service).post(
        EVENTS, {"feature": "api_calls", "idempotency_key": "s", "user_id": user.pk}, format="json"
    )

    # then DRF's answers, and the hot path's for the customer's own id
    assert (for_other.status_code, for_other.json()["error"]["code"]) == (403, "permission_denied")
    assert (with_time.status_code, with_time.json()["error"]["code"]) == (400, "occurred_at_too_old")
    assert (zero.status_code, zero.json()["error"]["fields"]["quantity"][0]["code"]) == (400, "min_value")
    assert (own_id.status_code, own_id.json()["used"]) == (201, 1)
    assert (by_service.status_code, by_service.json()["used"]) == (201, 2)
    assert sorted(UsageRecord.objects.values_list("idempotency_key", flat=True)) == ["i", "s"]


def test_the_rate_limit_is_the_throttles_and_counts_both_paths(quota: Callable[..., Any]) -> None:
    # given a limit of 3 usage requests a minute
    with override_settings(RATELIMIT_RATES={"default": "100/m", "usage": "3/m"}):
        user = quota(limit=100)
        client = _token_client(user)

        # when one goes through DRF (the token not cached yet), then three warm
        statuses = [
            client.post(
                EVENTS, {"feature": "api_calls", "idempotency_key": f"r{n}"}, format="json"
            ).status_code
            for n in range(4)
        ]
        refused = client.post(EVENTS, {"feature": "api_calls", "idempotency_key": "r9"}, format="json")

    # then the fourth and fifth are refused in the error format, nothing recorded for them
    assert statuses == [201, 201, 201, 429]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert UsageRecord.objects.count() == 3


def test_a_deactivated_user_is_refused_although_warm(quota: Callable[..., Any]) -> None:
    # given a warm customer
    user = quota(limit=100)
    client = _warm(user)

    # when they are deactivated
    user.is_active = False
    user.save()
    response = client.post(EVENTS, {"feature": "api_calls", "idempotency_key": "d"}, format="json")

    # then DRF refuses the token and nothing is recorded
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "User inactive or deleted."
    assert UsageRecord.objects.count() == 0


def test_only_the_spellings_of_the_url_the_urlconf_takes_are_answered(quota: Callable[..., Any]) -> None:
    # given a warm customer
    user = quota(limit=100)
    fast = _warm(user)
    drf = _drf_client(user)

    # when they post without the trailing slash the router requires
    fast_answer = fast.post(
        EVENTS.rstrip("/"), {"feature": "api_calls", "idempotency_key": "n"}, format="json"
    )
    drf_answer = drf.post(EVENTS.rstrip("/"), {"feature": "api_calls", "idempotency_key": "n"}, format="json")

    # then the same answer as without the hot path, and nothing recorded
    assert fast_answer.status_code == drf_answer.status_code == 404
    assert UsageRecord.objects.count() == 0


@pytest.mark.parametrize("number", [2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**29])
def test_an_integer_past_64_bits_is_refused_as_drf_refuses_it(quota: Callable[..., Any], number: int) -> None:
    # given a warm customer, and the same customer through DRF only
    user = quota(limit=100)
    fast = _warm(user)
    drf = _drf_client(user)
    body = f'{{"feature": "api_calls", "idempotency_key": "big", "metadata": {{"n": {number}}}}}'

    # when both send an event whose metadata holds the number
    answers = [client.post(EVENTS, body, content_type="application/json") for client in (fast, drf)]

    # then the parser's 400, nothing recorded
    assert [a.status_code for a in answers] == [400, 400]
    assert answers[0].content == answers[1].content
    assert answers[0].json()["error"]["code"] == "parse_error"
    assert UsageRecord.objects.count() == 0
