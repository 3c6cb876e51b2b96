"""The plain-view hot path of entitlements/check and bulk-check (entitlements.hotpath)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import OperationalError
from django.test import override_settings
from django_redis import get_redis_connection
from prometheus_client import REGISTRY
from rest_framework.authtoken.models import Token
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from billing.models import Plan
from entitlements import cache, hotpath
from entitlements.services import entitlement_grant_for_subscription
from payments_project.accounts.tests.factories import UserFactory
from payments_project.authentication import token_cache_keys
from subscriptions.tests.factories import SubscriptionFactory

CHECK = "/api/v1/entitlements/check"
BULK = "/api/v1/entitlements/bulk-check"
CLOSED_PORT_REDIS = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
    }
}
# What DRF's headers and ours must agree on (the rest is middleware, the same for both).
COMPARED_HEADERS = ("Content-Type", "Retry-After", "WWW-Authenticate", "Allow", "Vary")


@pytest.fixture(autouse=True)
def _no_hints() -> Iterator[None]:
    hotpath._HINTS.clear()
    yield
    hotpath._HINTS.clear()


def _subscriber(make_plan: Callable[..., Plan], *codes: str) -> tuple[Any, APIClient, str]:
    subscription: Any = SubscriptionFactory(plan=make_plan(*codes))
    entitlement_grant_for_subscription(subscription=subscription)
    key = Token.objects.create(user=subscription.user).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return subscription, client, key


def _headers(response: Any) -> dict[str, str | None]:
    return {name: response.get(name) for name in COMPARED_HEADERS}


@pytest.mark.django_db
def test_warm_single_check_is_one_redis_command_and_no_sql(
    make_plan: Callable[..., Plan], redis_commands: list[tuple[Any, ...]], django_assert_num_queries: Any
) -> None:
    # given a subscriber whose token, snapshot and hint are warm (one request through DRF)
    subscription, client, _ = _subscriber(make_plan, "export")
    first = client.get(f"{CHECK}?feature=export")
    redis_commands.clear()

    # when they check again
    with django_assert_num_queries(0):
        response = client.get(f"{CHECK}?feature=export")

    # then one script (token + rate-limit counter + snapshot fields), the same bytes as DRF's
    assert [command[0] for command in redis_commands] == ["EVALSHA"]
    assert response.status_code == 200
    assert response.content == first.content
    assert _headers(response) == _headers(first)
    assert response.json() == {
        "feature": "export",
        "allowed": True,
        "reason": "granted",
        "source": "own",
        "plan": subscription.plan.code,
        "expires_at": subscription.current_period_end.isoformat(),
        "limit": None,
        "used": None,
        "remaining": None,
        "resets_at": None,
    }


@pytest.mark.django_db
def test_warm_bulk_check_is_one_redis_command_and_no_sql(
    make_plan: Callable[..., Plan], redis_commands: list[tuple[Any, ...]], django_assert_num_queries: Any
) -> None:
    # given 100 granted features, warm
    codes = [f"f{i:03d}" for i in range(100)]
    _, client, _ = _subscriber(make_plan, *codes)
    first = client.post(BULK, {"features": [*codes, "nope"]}, format="json")
    redis_commands.clear()

    # when the 100 plus an unknown one are checked again
    with django_assert_num_queries(0):
        response = client.post(BULK, {"features": [*codes, "nope"]}, format="json")

    # then
    results = response.json()["results"]
    assert [command[0] for command in redis_commands] == ["EVALSHA"]
    assert response.status_code == 200
    assert response.content == first.content
    assert _headers(response) == _headers(first)
    assert [r["allowed"] for r in results] == [True] * 100 + [False]
    assert results[100]["reason"] == "unknown_feature"


@pytest.mark.django_db
def test_without_credentials_is_401_not_authenticated(api_client: APIClient) -> None:
    response = api_client.get(f"{CHECK}?feature=export")
    bulk = api_client.post(BULK, {"features": ["export"]}, format="json")

    assert [response.status_code, bulk.status_code] == [401, 401]
    assert response.json() == bulk.json()
    assert response.json()["error"] == {
        "code": "not_authenticated",
        "message": "Authentication credentials were not provided.",
        "fields": {},
    }
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.django_db
def test_a_bad_token_is_401_authentication_failed(api_client: APIClient) -> None:
    api_client.credentials(HTTP_AUTHORIZATION="Token nope")

    response = api_client.get(f"{CHECK}?feature=export")
    bulk = api_client.post(BULK, {"features": ["export"]}, format="json")

    assert [response.status_code, bulk.status_code] == [401, 401]
    assert response.json() == bulk.json()
    assert response.json()["error"] == {
        "code": "authentication_failed",
        "message": "Invalid token.",
        "fields": {},
    }


@pytest.mark.django_db
def test_a_deactivated_user_is_refused_although_warm(make_plan: Callable[..., Plan]) -> None:
    # given a warm subscriber
    subscription, client, _ = _subscriber(make_plan, "export")
    client.get(f"{CHECK}?feature=export")

    # when they are deactivated
    subscription.user.is_active = False
    subscription.user.save()
    response = client.get(f"{CHECK}?feature=export")

    # then
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "User inactive or deleted."


@pytest.mark.django_db
def test_a_user_asking_for_another_user_warm_is_403(make_plan: Callable[..., Plan]) -> None:
    # given a warm subscriber and bob
    _, client, _ = _subscriber(make_plan, "export")
    client.get(f"{CHECK}?feature=export")
    bob = UserFactory(username="bob")

    # when they ask about bob
    response = client.get(f"{CHECK}?feature=export&user_id={bob.pk}")
    bulk = client.post(BULK, {"features": ["export"], "user_id": bob.pk}, format="json")

    # then
    assert [response.status_code, bulk.status_code] == [403, 403]
    assert response.json()["error"] == {
        "code": "permission_denied",
        "message": "Only staff and service accounts may read another user's data.",
        "fields": {},
    }
    assert bulk.json() == response.json()


@pytest.mark.django_db
def test_own_user_id_is_answered_warm_and_a_service_account_may_ask_for_anyone(
    make_plan: Callable[..., Plan], redis_commands: list[tuple[Any, ...]]
) -> None:
    # given a warm subscriber and a service account
    subscription, client, _ = _subscriber(make_plan, "export")
    client.get(f"{CHECK}?feature=export")
    service: Any = UserFactory(username="checkout-service")
    service.groups.add(Group.objects.get(name="service"))
    service_client = APIClient()
    service_client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=service).key}")
    redis_commands.clear()

    # when the subscriber names themselves, and the service asks about the subscriber
    own = client.get(f"{CHECK}?feature=export&user_id={subscription.user.pk}")
    own_commands = [command[0] for command in redis_commands]
    answered = service_client.post(
        BULK, {"features": ["export"], "user_id": subscription.user.pk}, format="json"
    )

    # then
    assert own_commands == ["EVALSHA"]
    assert own.json()["allowed"] is True
    assert answered.status_code == 200
    assert answered.json()["results"][0]["allowed"] is True


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "field", "code"),
    [
        ("", "feature", "required"),
        ("feature=", "feature", "blank"),
        (f"feature={'x' * 65}", "feature", "max_length"),
    ],
)
def test_check_validation_errors(make_plan: Callable[..., Plan], query: str, field: str, code: str) -> None:
    # given a warm subscriber
    _, client, _ = _subscriber(make_plan, "export")
    client.get(f"{CHECK}?feature=export")

    # when the query is invalid
    response = client.get(f"{CHECK}?{query}")

    # then
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["message"] == "The request has invalid fields."
    assert response.json()["error"]["fields"][field][0]["code"] == code


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({}, "features", "required"),
        ({"features": []}, "features", "empty"),
        ({"features": "export"}, "features", "not_a_list"),
        ({"features": [f"f{i}" for i in range(201)]}, "features", "max_length"),
        ({"features": ["export", ""]}, "features.1", "blank"),
        ({"features": ["export", ["export"]]}, "features.1", "invalid"),
        ({"features": ["export", {"a": 1}]}, "features.1", "invalid"),
        ({"features": ["export"], "user_id": "x"}, "user_id", "invalid"),
    ],
)
def test_bulk_check_validation_errors(
    make_plan: Callable[..., Plan], body: dict[str, Any], field: str, code: str
) -> None:
    # given a warm subscriber
    _, client, _ = _subscriber(make_plan, "export")
    client.post(BULK, {"features": ["export"]}, format="json")

    # when the body is invalid
    response = client.post(BULK, body, format="json")

    # then
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["fields"][field][0]["code"] == code


@pytest.mark.django_db
def test_rate_limit_warm_is_429_with_retry_after(
    make_plan: Callable[..., Plan], redis_commands: list[tuple[Any, ...]]
) -> None:
    # given a limit of 3 a minute and a warm subscriber (the warming request counts)
    with override_settings(RATELIMIT_RATES={"default": "100/m", "entitlements": "3/m"}):
        _, client, _ = _subscriber(make_plan, "export")
        client.get(f"{CHECK}?feature=export")

        # when they check three more times
        statuses = [client.get(f"{CHECK}?feature=export").status_code for _ in range(2)]
        redis_commands.clear()
        refused = client.post(BULK, {"features": ["export"]}, format="json")

    # then the fourth is refused by the one script, in the error format
    assert statuses == [200, 200]
    assert [command[0] for command in redis_commands] == ["EVALSHA"]
    assert refused.status_code == 429
    wait = int(refused["Retry-After"])
    assert 1 <= wait <= 60
    assert refused.json()["error"] == {
        "code": "rate_limited",
        "message": f"Request was throttled. Expected available in {wait} second{'s' if wait > 1 else ''}.",
        "fields": {},
    }


@pytest.mark.django_db
def test_fast_and_drf_rate_limits_share_one_counter(make_plan: Callable[..., Plan]) -> None:
    # given a limit of 2 a minute
    with override_settings(RATELIMIT_RATES={"default": "100/m", "entitlements": "2/m"}):
        _, client, key = _subscriber(make_plan, "export")

        # when one request goes through DRF (no hint yet), one warm, one more warm
        answers = [client.get(f"{CHECK}?feature=export").status_code for _ in range(3)]

    # then the counter is the same one
    assert answers == [200, 200, 429]
    assert key in hotpath._HINTS


@pytest.mark.django_db
def test_database_down_on_a_warm_request_is_503_database_unavailable(
    make_plan: Callable[..., Plan], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a warm subscriber, then the database gone when the unknown codes must be looked up
    _, client, _ = _subscriber(make_plan, "export")
    client.get(f"{CHECK}?feature=export")

    def down() -> frozenset[str]:
        raise OperationalError("connection refused")

    monkeypatch.setattr("entitlements.selectors.feature_codes_known", down)

    # when a code outside the snapshot is checked
    response = client.get(f"{CHECK}?feature=other")

    # then
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json() == {
        "error": {
            "code": "database_unavailable",
            "message": "The service cannot reach its database; retry shortly.",
            "fields": {},
        }
    }


@pytest.mark.django_db
def test_a_missing_snapshot_is_rebuilt_from_the_database(make_plan: Callable[..., Plan]) -> None:
    # given a warm subscriber whose snapshot was invalidated
    subscription, client, _ = _subscriber(make_plan, "export")
    client.get(f"{CHECK}?feature=export")
    cache.snapshot_invalidate(user_ids=[subscription.user.pk])

    # when they check
    response = client.post(BULK, {"features": ["export", "sso"]}, format="json")

    # then the answer comes from the database and the snapshot is stored again
    assert response.status_code == 200
    assert [(r["feature"], r["reason"]) for r in response.json()["results"]] == [
        ("export", "granted"),
        ("sso", "unknown_feature"),
    ]
    assert cache.snapshot_read_fields(user_id=subscription.user.pk, codes=[])[0] is not None


@pytest.mark.django_db
def test_a_stale_hint_never_answers_for_the_wrong_user(make_plan: Callable[..., Plan]) -> None:
    # given a warm subscriber, and a hint pointing their token at another user with export
    _, client, key = _subscriber(make_plan, "export")
    other, _, _ = _subscriber(make_plan, "sso")
    client.get(f"{CHECK}?feature=export")
    hotpath._HINTS[key] = other.user.pk

    # when they check sso (which only the other user holds)
    response = client.get(f"{CHECK}?feature=sso")

    # then their own answer, and the hint is corrected
    assert response.status_code == 200
    assert response.json()["allowed"] is False
    assert hotpath._HINTS[key] != other.user.pk


@pytest.mark.django_db
@override_settings(CACHES=CLOSED_PORT_REDIS)
def test_with_redis_down_answers_come_from_the_database(make_plan: Callable[..., Plan]) -> None:
    # given Redis unreachable and a subscriber
    _, client, _ = _subscriber(make_plan, "export")

    # when they check, twice (the second time with a hint)
    first = client.get(f"{CHECK}?feature=export")
    second = client.post(BULK, {"features": ["export", "nope"]}, format="json")

    # then both are answered from the database
    assert first.status_code == 200
    assert first.json()["allowed"] is True
    assert second.status_code == 200
    assert [(r["allowed"], r["reason"]) for r in second.json()["results"]] == [
        (True, "granted"),
        (False, "unknown_feature"),
    ]


@pytest.mark.django_db
def test_session_auth_works_and_a_session_post_needs_csrf(make_plan: Callable[..., Plan]) -> None:
    # given a logged-in subscriber (session cookie) whose client enforces CSRF
    subscription, _, _ = _subscriber(make_plan, "export")
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(subscription.user)

    # when they check with GET and POST without a CSRF token
    answered = client.get(f"{CHECK}?feature=export")
    refused = client.post(BULK, {"features": ["export"]}, format="json")

    # then
    assert answered.status_code == 200
    assert answered.json()["allowed"] is True
    assert refused.status_code == 403
    assert refused.json()["error"] == {
        "code": "permission_denied",
        "message": "CSRF Failed: CSRF cookie not set.",
        "fields": {},
    }


@pytest.mark.django_db
def test_a_token_post_needs_no_csrf(make_plan: Callable[..., Plan]) -> None:
    # given a warm token client that enforces CSRF
    subscription: Any = SubscriptionFactory(plan=make_plan("export"))
    entitlement_grant_for_subscription(subscription=subscription)
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=subscription.user).key}")

    # when it posts twice (through DRF, then warm)
    answers = [client.post(BULK, {"features": ["export"]}, format="json").status_code for _ in range(2)]

    # then
    assert answers == [200, 200]


@pytest.mark.django_db
def test_a_warm_answer_skips_the_session_and_keeps_the_outer_headers(
    make_plan: Callable[..., Plan], redis_commands: list[tuple[Any, ...]]
) -> None:
    # given a warm subscriber, and a request id of the caller's
    _, client, _ = _subscriber(make_plan, "export")
    through_drf = client.get(f"{CHECK}/?feature=export")
    redis_commands.clear()

    # when they check again, at the path with the trailing slash
    response = client.get(f"{CHECK}/?feature=export", HTTP_X_REQUEST_ID="req-123")

    # then the middleware answered (one script, nothing else) before the session/auth middleware,
    # and the headers of the middleware outside it are there as on the DRF answer
    assert [command[0] for command in redis_commands] == ["EVALSHA"]
    assert response.status_code == 200
    assert response["X-Request-ID"] == "req-123"
    assert response["X-Content-Type-Options"] == through_drf["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == through_drf["X-Frame-Options"] == "DENY"
    assert response.cookies == through_drf.cookies == {}
    assert response.get("Vary") == through_drf.get("Vary")


@pytest.mark.django_db
def test_head_and_other_paths_go_through_drf(
    make_plan: Callable[..., Plan], redis_commands: list[tuple[Any, ...]]
) -> None:
    # given a warm subscriber
    _, client, _ = _subscriber(make_plan, "export")
    client.get(f"{CHECK}?feature=export")
    redis_commands.clear()

    # when they send HEAD, and GET the list of entitlements
    head = client.head(f"{CHECK}?feature=export")
    listed = client.get("/api/v1/entitlements/")

    # then both went through DRF: the cached token (MGET), the rate-limit script, then the snapshot
    assert head.status_code == 200
    assert listed.status_code == 200
    assert [command[0] for command in redis_commands] == [
        "MGET",
        "EVALSHA",
        "HMGET",
        "MGET",
        "EVALSHA",
        "HGETALL",
    ]


def test_the_hot_path_writes_the_bytes_of_drfs_json_renderer() -> None:
    # given answers with control characters, non-ASCII, U+2028/2029, an emoji, ints, bools, None
    data = {
        "results": [
            {"feature": "tab\there", "plan": "caf\u00e9 \u65e5\u672c", "limit": 10**12, "allowed": True},
            {"feature": "line\u2028sep\u2029para", "plan": '\U0001f600 \x7f \x1f \\ " /', "used": None},
        ]
    }

    # when both render it
    ours = hotpath._json(200, data).content
    drf = JSONRenderer().render(data)

    # then the bytes are the same
    assert ours == drf
    assert b"\\u2028" in ours


@pytest.mark.django_db
def test_a_body_in_another_charset_is_read_by_drf_with_that_charset(
    make_plan: Callable[..., Plan], redis_commands: list[tuple[Any, ...]]
) -> None:
    # given a warm subscriber
    _, client, _ = _subscriber(make_plan, "export")
    client.get(f"{CHECK}?feature=export")
    redis_commands.clear()

    # when they post bytes that are valid UTF-8 but declared latin-1
    body = '{"features": ["\u00c3\u00a9"]}'.encode("latin-1")
    response = client.generic("POST", BULK, body, content_type="application/json; charset=latin-1")

    # then DRF answered (token read first), for the code as latin-1 spells it
    assert response.status_code == 200
    assert redis_commands[0][0] == "MGET"
    assert [r["feature"] for r in response.json()["results"]] == ["\u00c3\u00a9"]


@pytest.mark.django_db
def test_a_worker_new_to_a_cached_token_reads_its_user_from_the_token_snapshot(
    make_plan: Callable[..., Plan], redis_commands: list[tuple[Any, ...]]
) -> None:
    # given a token whose user snapshot is cached (a DRF answer), and a worker that never saw it
    _, client, key = _subscriber(make_plan, "export")
    first = client.get(f"{CHECK}?feature=export")
    hotpath._HINTS.clear()
    redis_commands.clear()

    # when the token checks twice
    second = client.get(f"{CHECK}?feature=export")
    third = client.get(f"{CHECK}?feature=export")

    # then the first read the token snapshot once, then the script; the next only the script
    assert [command[0] for command in redis_commands] == ["GET", "EVALSHA", "EVALSHA"]
    assert second.content == third.content == first.content
    assert key in hotpath._HINTS


@pytest.mark.django_db
def test_an_inactive_token_snapshot_is_not_used_as_a_hint(make_plan: Callable[..., Plan]) -> None:
    # given a token whose cached snapshot says its user is deactivated (a hand-written snapshot)
    subscription, client, key = _subscriber(make_plan, "export")
    client.get(f"{CHECK}?feature=export")
    hotpath._HINTS.clear()
    snapshot_key = token_cache_keys(key)[0]
    get_redis_connection("default").set(snapshot_key, f"{subscription.user.pk}|0|0|0")

    # when the token checks
    response = client.get(f"{CHECK}?feature=export")

    # then no hint was taken from it and DRF refused the inactive user
    assert key not in hotpath._HINTS
    assert response.status_code == 401


@pytest.mark.django_db
def test_a_warm_answer_is_counted_in_django_prometheus_series_by_view(make_plan: Callable[..., Plan]) -> None:
    # given a warm subscriber
    _, client, _ = _subscriber(make_plan, "export")
    client.get(f"{CHECK}?feature=export")
    labels = {"status": "200", "view": "entitlement-check", "method": "GET"}
    before = REGISTRY.get_sample_value("django_http_responses_total_by_status_view_method_total", labels) or 0

    # when they check warm twice
    client.get(f"{CHECK}?feature=export")
    client.get(f"{CHECK}?feature=export")

    # then both are counted under the view's URL name, as the DRF answer was
    after = REGISTRY.get_sample_value("django_http_responses_total_by_status_view_method_total", labels)
    assert after == before + 2


@pytest.mark.django_db
def test_a_no_break_space_in_the_token_header_is_not_a_separator(
    make_plan: Callable[..., Plan], redis_commands: list[tuple[Any, ...]]
) -> None:
    # given a warm subscriber
    _, client, key = _subscriber(make_plan, "export")
    client.get(f"{CHECK}?feature=export")
    redis_commands.clear()

    # when the header separates scheme and key with U+00A0 (DRF splits on ASCII whitespace only)
    response = APIClient().get(f"{CHECK}?feature=export", HTTP_AUTHORIZATION=f"Token\u00a0{key}")

    # then the hot path declined (no Redis command: DRF saw no token at all) and DRF refused
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert redis_commands == []


def test_a_value_orjson_cannot_write_is_rendered_by_drf() -> None:
    # given an error body whose extra holds a Decimal
    data = {"error": {"code": "x", "message": "m", "fields": {}, "amount": Decimal("1.50")}}

    # when / then
    assert hotpath._json(400, data).content == JSONRenderer().render(data)


@pytest.mark.parametrize("snapshot", ["garbage", "7|1", "x|1|0|0", b"7|1|0|\xff"])
def test_a_token_snapshot_authentication_could_not_read_is_not_used_as_a_hint(snapshot: str | bytes) -> None:
    # given a token whose cached snapshot is not one the authentication class reads
    get_redis_connection("default").set(token_cache_keys("abc")[0], snapshot)

    # when / then the hot path takes no user from it (the request goes to DRF)
    assert hotpath._user_for("abc") is None
    assert "abc" not in hotpath._HINTS


def test_items_that_are_no_plain_code_are_left_to_drf() -> None:
    # when lists holding a code and an item that is no plain code are checked
    not_codes: list[Any] = [["export"], {"a": 1}, 1, True, " x", "", "a\nb", "x" * 65, "\ufffd"]
    answers = [hotpath._simple_codes(["export", item]) for item in not_codes]

    # then each is refused (DRF answers them), and the code alone is taken
    assert answers == [False] * 9
    assert hotpath._simple_codes(["export"]) is True


@pytest.mark.django_db
@pytest.mark.parametrize("codes", [["export", ""], ["export", "a\nb"]])
def test_codes_the_script_would_split_are_never_sent_to_it(
    make_plan: Callable[..., Plan], redis_commands: list[tuple[Any, ...]], codes: list[str]
) -> None:
    # given a warm subscriber
    subscription, client, key = _subscriber(make_plan, "export")
    client.get(f"{CHECK}?feature=export")
    redis_commands.clear()

    # when the warm read is asked for an empty code or one holding the separator
    read = hotpath._warm_read(key, subscription.user_id, codes)

    # then it declines before any Redis command (the caller hands the request to DRF)
    assert read is None
    assert redis_commands == []


@pytest.mark.django_db
def test_codes_named_like_the_snapshots_own_fields_are_unknown(make_plan: Callable[..., Plan]) -> None:
    # given a subscriber holding one feature, whose snapshot is built by the first request
    _, client, _ = _subscriber(make_plan, "export")
    codes = ["__meta", cache.usage_field("export"), "export"]
    cold = client.post(BULK, {"features": codes}, format="json")

    # when the same codes are checked warm, in bulk and alone
    warm = client.post(BULK, {"features": codes}, format="json")
    single = client.get(f"{CHECK}?feature=__meta")

    # then the snapshot's fields are never read as features: unknown, both ways
    assert (cold.status_code, warm.status_code, single.status_code) == (200, 200, 200)
    assert warm.content == cold.content
    assert [(r["feature"], r["reason"]) for r in warm.json()["results"]] == [
        ("__meta", "unknown_feature"),
        ("__u:export", "unknown_feature"),
        ("export", "granted"),
    ]
    assert (single.json()["reason"], single.json()["allowed"]) == ("unknown_feature", False)
