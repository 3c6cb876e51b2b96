"""The hot paths answered before Django's handler (payments_project.hotpath.hot_paths_wsgi), as the
production server runs them: the same answers as the full stack, and anything else handed on.

Each case goes once through the WSGI layer in front of Django's handler and once through Django's
handler alone (whose HotPathMiddleware answers the same warm requests). Transactional tests: the
layer hands on any request made inside a transaction, as tests' usually are.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection
from django.test import RequestFactory
from prometheus_client import REGISTRY
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from payments_project.hotpath import hot_paths_wsgi
from payments_project.tests.helpers import CountingDjango
from usage.models import UsageCounter, UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

EVENTS = "/api/v1/usage/events/"
CHECK = "/api/v1/entitlements/check"
Answer = tuple[int, dict[str, Any], dict[str, str]]


def _token(user: Any) -> str:
    return Token.objects.get_or_create(user=user)[0].key


def _warm(user: Any) -> None:
    """The token's snapshot cached by a first request through DRF."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {_token(user)}")
    assert client.get("/api/v1/usage/summary/", {"feature": "api_calls"}).status_code == 200


def _call(
    app: Callable[..., Iterable[bytes]], user: Any, method: str, path: str, body: Any = None, **extra: str
) -> Answer:
    """(status, body, headers but the request id); `user` a user or a token key."""
    token = user if isinstance(user, str) else _token(user)
    data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    request = RequestFactory().generic(
        method,
        path,
        data,
        content_type="application/json",
        **{"HTTP_HOST": "testserver", "HTTP_AUTHORIZATION": f"Token {token}", **extra},
    )
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        answer["status"], answer["headers"] = int(status.split()[0]), dict(headers)

    chunks = app(request.environ, start_response)
    content = b"".join(chunks)
    if hasattr(chunks, "close"):
        chunks.close()
    headers = {name: value for name, value in answer["headers"].items() if name != "X-Request-ID"}
    try:
        return answer["status"], json.loads(content), headers
    except ValueError:
        return answer["status"], {"not json": content.decode()}, headers


def _event(key: str, quantity: int = 1) -> dict[str, Any]:
    return {"feature": "api_calls", "quantity": quantity, "idempotency_key": key}


def _without_record_id(answer: Answer) -> Answer:
    status, body, headers = answer
    return status, {**body, "record_id": None}, headers


def test_a_warm_event_is_answered_before_django_as_the_full_stack_answers_it(
    quota: Callable[..., Any],
) -> None:
    # given two customers alike, warm, each with a counter this period
    lane_user, stack_user = quota(limit=10), quota(limit=10)
    django = CountingDjango()
    lane = hot_paths_wsgi(django)
    for user in (lane_user, stack_user):
        _warm(user)
        assert _call(WSGIHandler(), user, "POST", EVENTS, _event("first"))[0] == 201
    django.calls = 0

    # when one records through the layer and the other through Django's handler alone
    taken = _call(lane, lane_user, "POST", EVENTS, _event("second", 4))
    alone = _call(WSGIHandler(), stack_user, "POST", EVENTS, _event("second", 4))

    # then Django never saw the first, and both answers are the same but for the record
    assert django.calls == 0
    assert _without_record_id(taken) == _without_record_id(alone)
    assert taken[0] == 201
    assert (taken[1]["used"], taken[1]["remaining"]) == (5, 5)
    assert taken[2]["Allow"] == "POST, OPTIONS"
    assert taken[2]["X-Frame-Options"] == "DENY"
    assert UsageCounter.objects.get(subject=f"u{lane_user.pk}").used == 5


def test_refusals_replays_and_conflicts_are_answered_as_the_full_stack_answers_them(
    quota: Callable[..., Any],
) -> None:
    # given a warm customer with 10 units, 6 used
    user = quota(limit=10)
    _warm(user)
    assert _call(WSGIHandler(), user, "POST", EVENTS, _event("k", 6))[0] == 201
    lane = hot_paths_wsgi(CountingDjango())

    # when each is sent through the layer and through Django alone
    cases = [_event("k", 6), _event("k", 7), _event("over", 5)]
    taken = [_call(lane, user, "POST", EVENTS, body) for body in cases]
    alone = [_call(WSGIHandler(), user, "POST", EVENTS, body) for body in cases]

    # then the replay, the reused key and the refusal are the same answers
    assert taken == alone
    assert [answer[0] for answer in taken] == [200, 409, 429]
    assert UsageRecord.objects.count() == 1


def test_a_warm_check_is_answered_before_django_as_the_full_stack_answers_it(
    quota: Callable[..., Any],
) -> None:
    user = quota(limit=10)
    _warm(user)
    django = CountingDjango()
    _call(WSGIHandler(), user, "GET", f"{CHECK}?feature=api_calls")  # the check's own snapshot

    taken = _call(hot_paths_wsgi(django), user, "GET", f"{CHECK}?feature=api_calls")
    alone = _call(WSGIHandler(), user, "GET", f"{CHECK}?feature=api_calls")

    assert django.calls == 0
    assert taken == alone
    assert taken[0] == 200
    assert taken[1]["allowed"] is True


# what the request differs in, and the status the full stack answers
HANDED_ON: dict[str, tuple[dict[str, Any], int]] = {
    "host not allowed": ({"HTTP_HOST": "evil.test"}, 400),
    "NUL in the query": ({"QUERY_STRING": "a=%00"}, 400),
    "another charset": ({"CONTENT_TYPE": "application/json; charset=latin-1"}, 201),
    "nested too deep": ({"body": b'{"metadata": ' + b"[" * 200 + b"]" * 200 + b"}"}, 400),
    "not JSON": ({"body": b"feature=api_calls", "CONTENT_TYPE": "application/x-www-form-urlencoded"}, 415),
    "unknown token": ({"HTTP_AUTHORIZATION": "Token " + "0" * 40}, 401),
}


@pytest.mark.parametrize("case", HANDED_ON.keys())
def test_anything_else_reaches_django_untouched(case: str, quota: Callable[..., Any]) -> None:
    # given a warm customer, and a request the layer does not take
    user = quota(limit=10)
    _warm(user)
    extra, status = HANDED_ON[case]
    body = extra.pop("body", None) if "body" in extra else _event(f"{case}-1")
    django = CountingDjango()

    # when it is sent through the layer
    handed_on = _call(hot_paths_wsgi(django), user, "POST", EVENTS, body, **extra)

    # then Django answered it as it answers it alone (the body was handed on whole)
    assert django.calls == 1
    assert handed_on[0] == status
    if status == 201:
        assert UsageRecord.objects.filter(idempotency_key=f"{case}-1").count() == 1
    else:
        again = body if not isinstance(body, dict) else _event(f"{case}-1")
        assert handed_on == _call(WSGIHandler(), user, "POST", EVENTS, again, **extra)


def test_a_connection_that_died_idle_is_replaced_and_the_event_recorded_once(
    quota: Callable[..., Any],
) -> None:
    # given a warm customer whose event this thread recorded, then its connection closed under
    # Django's feet (no health check on this path)
    user = quota(limit=10)
    _warm(user)
    django = CountingDjango()
    lane = hot_paths_wsgi(django)
    token = _token(user)
    assert _call(lane, token, "POST", EVENTS, _event("first"))[0] == 201
    connection.connection.close()

    # when the next event comes
    status, body, _ = _call(lane, token, "POST", EVENTS, _event("second"))

    # then the first statement failed, a new connection took it, once
    assert (status, body.get("used"), django.calls) == (201, 2, 0), body
    assert sorted(UsageRecord.objects.values_list("idempotency_key", flat=True)) == ["first", "second"]


def test_an_answer_is_counted_as_the_view_would_be_and_keeps_the_callers_request_id(
    quota: Callable[..., Any],
) -> None:
    user = quota(limit=10)
    _warm(user)
    labels = {"status": "201", "view": "usage-events", "method": "POST"}
    by_view = "django_http_responses_total_by_status_view_method_total"
    before = "django_http_requests_before_middlewares_total"
    counts = (REGISTRY.get_sample_value(by_view, labels) or 0, REGISTRY.get_sample_value(before) or 0)
    seen: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen.update(headers)

    environ = (
        RequestFactory()
        .post(
            EVENTS,
            json.dumps(_event("counted")),
            content_type="application/json",
            HTTP_HOST="testserver",
            HTTP_AUTHORIZATION=f"Token {_token(user)}",
            HTTP_X_REQUEST_ID="req-lane-1",
        )
        .environ
    )
    b"".join(hot_paths_wsgi(CountingDjango())(environ, start_response))

    assert seen["X-Request-ID"] == "req-lane-1"
    assert (REGISTRY.get_sample_value(by_view, labels), REGISTRY.get_sample_value(before)) == (
        counts[0] + 1,
        counts[1] + 1,
    )


def test_a_query_past_the_field_limit_is_answered_by_django(quota: Callable[..., Any]) -> None:
    # given a warm customer
    user = quota(limit=10)
    _warm(user)
    django = CountingDjango()
    path = f"{CHECK}?feature=api_calls&" + "&".join(f"a{i}=1" for i in range(1100))

    # when a check names more query fields than Django parses
    taken = _call(hot_paths_wsgi(django), user, "GET", path)

    # then the layer handed it on and Django refused it, as it does alone
    assert (taken[0], django.calls) == (400, 1)
    assert taken == _call(WSGIHandler(), user, "GET", path)


def test_a_check_reading_the_database_on_a_connection_that_died_idle_is_answered(
    quota: Callable[..., Any],
) -> None:
    # given a warm customer whose entitlement snapshot is gone (the check reads the database) and
    # this thread's connection closed under Django's feet
    from django_redis import get_redis_connection

    from entitlements import cache

    user = quota(limit=10)
    _warm(user)
    token = _token(user)
    lane = hot_paths_wsgi(CountingDjango())
    assert _call(lane, token, "GET", f"{CHECK}?feature=api_calls")[0] == 200
    get_redis_connection("default").delete(cache.snapshot_key(user.pk))
    connection.connection.close()

    # when they check
    status, body, _ = _call(lane, token, "GET", f"{CHECK}?feature=api_calls")

    # then a new connection answered it
    assert (status, body.get("allowed")) == (200, True), body
