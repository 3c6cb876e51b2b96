"""Entitlement checks report the usage counters; Redis only mirrors PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from django.utils import timezone
from django_redis import get_redis_connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from entitlements import cache
from entitlements.periods import period_bounds
from entitlements.selectors import entitlement_check, entitlement_list
from payments_project.accounts.tests.factories import UserFactory
from subscriptions.models import FamilyMember
from usage.models import UsageCounter
from usage.services import UsageEvent, usage_events_record

pytestmark = pytest.mark.django_db
START = datetime(2026, 11, 1, tzinfo=UTC)


def _record(user: Any, key: str, quantity: int) -> None:
    with_commit = usage_events_record(
        events=[UsageEvent(user_id=user.pk, feature="api_calls", idempotency_key=key, quantity=quantity)]
    )
    assert with_commit[0].status == "recorded"


def _check(user: Any) -> dict[str, Any]:
    return entitlement_check(user_id=user.pk, features=["api_calls"])[0]


def test_a_check_reports_limit_used_remaining_and_resets_at(
    quota: Callable[..., Any], django_capture_on_commit_callbacks: Any
) -> None:
    user = quota(limit=10, period_start=START)
    cold = _check(user)  # builds the snapshot, counters included
    with django_capture_on_commit_callbacks(execute=True):
        _record(user, "a", 4)

    warm = _check(user)
    listed = entitlement_list(user_id=user.pk)

    assert (cold["used"], cold["remaining"]) == (0, 10)
    assert (warm["limit"], warm["used"], warm["remaining"], warm["allowed"]) == (10, 4, 6, True)
    assert warm["resets_at"] is not None
    assert [(r["feature"], r["used"]) for r in listed] == [("api_calls", 4)]


def test_a_full_quota_reads_quota_exhausted(
    quota: Callable[..., Any], django_capture_on_commit_callbacks: Any
) -> None:
    user = quota(limit=5, period_start=START)
    _check(user)
    with django_capture_on_commit_callbacks(execute=True):
        _record(user, "a", 5)

    assert (_check(user)["reason"], _check(user)["remaining"]) == ("quota_exhausted", 0)


def test_the_warm_check_is_one_redis_command(
    quota: Callable[..., Any], django_capture_on_commit_callbacks: Any, redis_commands: list[Any]
) -> None:
    user = quota(limit=10, period_start=START)
    _check(user)
    with django_capture_on_commit_callbacks(execute=True):
        _record(user, "a", 4)
    redis_commands.clear()

    result = _check(user)

    assert result["used"] == 4
    assert [command[0] for command in redis_commands] == ["HMGET"]


def test_a_family_pool_is_mirrored_to_every_member(
    quota: Callable[..., Any], django_capture_on_commit_callbacks: Any
) -> None:
    owner = quota(limit=10, family=True, period_start=START)
    member = UserFactory()
    FamilyMember.objects.create(family=owner.family, user=member)
    _check(owner), _check(member)
    with django_capture_on_commit_callbacks(execute=True):
        _record(member, "a", 3)

    assert (_check(owner)["used"], _check(member)["used"]) == (3, 3)


def test_redis_flushed_mid_run_loses_no_unit(
    quota: Callable[..., Any], django_capture_on_commit_callbacks: Any
) -> None:
    user = quota(limit=10, period_start=START)
    _check(user)
    with django_capture_on_commit_callbacks(execute=True):
        _record(user, "a", 4)
    get_redis_connection("default").flushdb()
    with django_capture_on_commit_callbacks(execute=True):
        _record(user, "b", 3)  # nothing to mirror into: the snapshot is gone

    after_flush = _check(user)  # rebuilt from PostgreSQL
    get_redis_connection("default").flushdb()
    with django_capture_on_commit_callbacks(execute=True):
        refused = usage_events_record(
            events=[UsageEvent(user_id=user.pk, feature="api_calls", idempotency_key="c", quantity=4)]
        )[0]

    assert (after_flush["used"], after_flush["remaining"]) == (7, 3)
    assert (refused.status, refused.code, refused.used) == ("refused", "quota_exceeded", 7)
    assert UsageCounter.objects.get().used == 7
    assert _check(user)["used"] == 7


def test_an_older_mirror_write_never_replaces_a_newer_one(quota: Callable[..., Any]) -> None:
    user = quota(limit=10, period_start=START)
    _check(user)
    # The period open now (monthly from START): a fixed date here broke when the month turned.
    start = period_bounds(reset_period="billing_period", anchor=START, at=timezone.now())[0].timestamp()
    newer = cache.UsageMirror(
        user_id=user.pk, feature="api_calls", period_start=start, used=6, reserved=0, seq=9
    )
    older = cache.UsageMirror(
        user_id=user.pk, feature="api_calls", period_start=start, used=2, reserved=0, seq=3
    )

    cache.usage_mirror_write(updates=[newer])
    cache.usage_mirror_write(updates=[older])

    assert _check(user)["used"] == 6


def test_the_warm_http_check_reads_the_mirrored_counter_in_one_script_and_no_sql(
    quota: Callable[..., Any],
    django_capture_on_commit_callbacks: Any,
    redis_commands: list[Any],
    django_assert_num_queries: Any,
) -> None:
    user = quota(limit=10, period_start=START)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    cold = client.get("/api/v1/entitlements/check?feature=api_calls").json()
    with django_capture_on_commit_callbacks(execute=True):
        recorded = client.post(
            "/api/v1/usage/events/",
            {"feature": "api_calls", "quantity": 6, "idempotency_key": "a"},
            format="json",
        )
    redis_commands.clear()

    with django_assert_num_queries(0):
        warm = client.get("/api/v1/entitlements/check?feature=api_calls").json()

    assert recorded.status_code == 201
    assert [command[0] for command in redis_commands] == ["EVALSHA"]
    assert (cold["used"], warm["used"], warm["remaining"], warm["limit"]) == (0, 6, 4, 10)
    assert warm["resets_at"] == cold["resets_at"] is not None


def test_the_warm_bulk_check_reports_the_mirrored_counters_in_one_script_and_no_sql(
    quota: Callable[..., Any],
    django_capture_on_commit_callbacks: Any,
    redis_commands: list[Any],
    django_assert_num_queries: Any,
) -> None:
    # given a customer with a quota of 10 api calls, checked once (the snapshot is built)
    user = quota(limit=10, period_start=START)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    body = {"features": ["api_calls", "nothing_such"]}
    cold = client.post("/api/v1/entitlements/bulk-check", body, format="json").json()["results"]
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            "/api/v1/usage/events/",
            {"feature": "api_calls", "quantity": 3, "idempotency_key": "a"},
            format="json",
        )
    redis_commands.clear()

    # when the bulk check is asked again
    with django_assert_num_queries(0):
        warm = client.post("/api/v1/entitlements/bulk-check", body, format="json").json()["results"]

    # then it answers from Redis in one script, with the counter the event moved
    assert [command[0] for command in redis_commands] == ["EVALSHA"]
    assert [(r["feature"], r["limit"], r["used"], r["remaining"]) for r in cold] == [
        ("api_calls", 10, 0, 10),
        ("nothing_such", None, None, None),
    ]
    assert [(r["feature"], r["limit"], r["used"], r["remaining"]) for r in warm] == [
        ("api_calls", 10, 3, 7),
        ("nothing_such", None, None, None),
    ]
    assert warm[0]["resets_at"] == cold[0]["resets_at"] is not None
