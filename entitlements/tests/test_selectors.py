from __future__ import annotations

from collections.abc import Callable

import pytest
import time_machine
from django.test import override_settings
from django.utils import timezone
from prometheus_client import REGISTRY

from billing.catalog.tests.factories import FeatureFactory, PlanFeatureFactory
from billing.models import Feature, Plan
from entitlements import cache
from entitlements.selectors import entitlement_check, entitlement_list, entitlement_snapshot_build
from entitlements.services import (
    entitlement_grant_for_subscription,
    entitlement_grant_one_time,
    entitlement_revoke_for_subscription,
    entitlement_suspend_for_subscription,
)
from payments_project.accounts.tests.factories import UserFactory
from subscriptions.tests.factories import SubscriptionFactory

CLOSED_PORT_REDIS = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
    }
}


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _one(user_id: int, code: str) -> dict[str, object]:
    return entitlement_check(user_id=user_id, features=[code])[0]


@pytest.mark.django_db
def test_grant_is_allowed_on_the_very_next_check_with_the_cache_warm(
    make_plan: Callable[..., Plan], django_capture_on_commit_callbacks
) -> None:
    # given a subscriber whose snapshot is cached while they have nothing
    subscription = SubscriptionFactory(plan=make_plan("export"))
    assert _one(subscription.user_id, "export")["reason"] == "no_subscription"

    # when the grant commits
    with django_capture_on_commit_callbacks(execute=True):
        entitlement_grant_for_subscription(subscription=subscription)

    # then the next check allows it
    assert _one(subscription.user_id, "export") == {
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
@pytest.mark.parametrize(
    ("service", "reason"),
    [
        (entitlement_revoke_for_subscription, "no_subscription"),
        (entitlement_suspend_for_subscription, "suspended"),
    ],
)
def test_revoke_and_suspend_refuse_on_the_very_next_check_with_the_cache_warm(
    make_plan: Callable[..., Plan], django_capture_on_commit_callbacks, service, reason: str
) -> None:
    # given a granted feature, checked once so the snapshot is warm
    subscription = SubscriptionFactory(plan=make_plan("export"))
    entitlement_grant_for_subscription(subscription=subscription)
    assert _one(subscription.user_id, "export")["allowed"] is True
    assert _one(subscription.user_id, "export")["allowed"] is True  # served from Redis

    # when the change commits
    with django_capture_on_commit_callbacks(execute=True):
        service(subscription=subscription)

    # then the next check refuses
    result = _one(subscription.user_id, "export")
    assert (result["allowed"], result["reason"]) == (False, reason)


@pytest.mark.django_db
def test_expiry_refuses_on_the_next_check_even_from_a_warm_cache(make_plan: Callable[..., Plan]) -> None:
    # given a grant ending at the period end, cached while still valid
    subscription = SubscriptionFactory(plan=make_plan("export"))
    entitlement_grant_for_subscription(subscription=subscription)
    assert _one(subscription.user_id, "export")["allowed"] is True
    hits = _metric("entitlement_cache_hits_total")

    # when the clock reaches the period end (no job ran, the snapshot is still in Redis)
    with time_machine.travel(subscription.current_period_end, tick=False):
        result = _one(subscription.user_id, "export")

    # then it is refused as expired, answered from the cache
    assert (result["allowed"], result["reason"]) == (False, "expired")
    assert _metric("entitlement_cache_hits_total") == hits + 1


@pytest.mark.django_db
def test_unknown_not_in_plan_and_limit_features_are_told_apart(make_plan: Callable[..., Plan]) -> None:
    # given a plan with a limit feature, and a feature in another plan
    plan = make_plan()
    PlanFeatureFactory(plan=plan, feature=FeatureFactory(code="seats", kind=Feature.Kind.LIMIT), limit=5)
    PlanFeatureFactory(plan=plan, feature=FeatureFactory(code="zero", kind=Feature.Kind.METERED), limit=0)
    FeatureFactory(code="sso")
    subscription = SubscriptionFactory(plan=plan)
    entitlement_grant_for_subscription(subscription=subscription)

    # when checking all in one call
    results = entitlement_check(user_id=subscription.user_id, features=["seats", "zero", "sso", "nope"])

    # then
    assert [(r["feature"], r["allowed"], r["reason"]) for r in results] == [
        ("seats", True, "granted"),
        ("zero", False, "quota_exhausted"),
        ("sso", False, "not_in_plan"),
        ("nope", False, "unknown_feature"),
    ]
    assert (results[0]["limit"], results[0]["used"], results[0]["remaining"]) == (5, 0, 5)


@pytest.mark.django_db
def test_bulk_check_of_100_features_is_one_redis_command_when_warm(
    make_plan: Callable[..., Plan], redis_commands: list[tuple[object, ...]]
) -> None:
    # given a plan of 100 features, granted and checked once
    codes = [f"f{i:03d}" for i in range(100)]
    subscription = SubscriptionFactory(plan=make_plan(*codes))
    entitlement_grant_for_subscription(subscription=subscription)
    entitlement_check(user_id=subscription.user_id, features=codes)
    redis_commands.clear()

    # when checking the 100 again
    results = entitlement_check(user_id=subscription.user_id, features=codes)

    # then all are allowed, from exactly one Redis command
    assert [r["allowed"] for r in results] == [True] * 100
    assert len(redis_commands) == 1
    assert redis_commands[0][0] == "HMGET"


@pytest.mark.django_db
def test_bulk_check_cold_costs_a_bounded_number_of_queries(
    make_plan: Callable[..., Plan], django_assert_num_queries, redis_commands: list[tuple[object, ...]]
) -> None:
    # given 100 granted features and a cold cache
    codes = [f"f{i:03d}" for i in range(100)]
    subscription = SubscriptionFactory(plan=make_plan(*codes))
    entitlement_grant_for_subscription(subscription=subscription)
    redis_commands.clear()

    # when checking them with the cache cold (plus one unknown code: the known codes are read once)
    with django_assert_num_queries(2):
        results = entitlement_check(user_id=subscription.user_id, features=[*codes, "nope"])

    # then: HMGET (miss), GET version, EVALSHA (store); the result is complete
    assert [r["allowed"] for r in results] == [True] * 100 + [False]
    assert [command[0] for command in redis_commands] == ["HMGET", "GET", "EVALSHA"]


@pytest.mark.django_db
def test_a_rebuild_that_raced_an_invalidation_is_not_stored(make_plan: Callable[..., Plan]) -> None:
    # given a rebuild that read the version and the database while the feature was granted
    subscription = SubscriptionFactory(plan=make_plan("export"))
    entitlement_grant_for_subscription(subscription=subscription)
    user_id = subscription.user_id
    version = cache.snapshot_version(user_id=user_id)
    meta, entries = entitlement_snapshot_build(user_id=user_id)

    # when a revocation commits and invalidates before the rebuild writes
    entitlement_revoke_for_subscription(subscription=subscription)
    cache.snapshot_invalidate(user_ids=[user_id])
    stored = cache.snapshot_write(user_id=user_id, version=version, meta=meta, entries=entries)

    # then the stale snapshot is dropped and the next check is right
    assert stored is False
    assert _one(user_id, "export")["allowed"] is False


@pytest.mark.django_db
@override_settings(CACHES=CLOSED_PORT_REDIS)
def test_with_redis_down_checks_are_answered_from_the_database(
    make_plan: Callable[..., Plan], django_capture_on_commit_callbacks
) -> None:
    # given Redis unreachable and a granted feature
    subscription = SubscriptionFactory(plan=make_plan("export", "sso"))
    with django_capture_on_commit_callbacks(execute=True):
        entitlement_grant_for_subscription(subscription=subscription)
    fallbacks = _metric("entitlement_cache_fallbacks_total")

    # when checking, listing, then after a revocation
    before = entitlement_check(user_id=subscription.user_id, features=["export", "nope"])
    listed = entitlement_list(user_id=subscription.user_id)
    with django_capture_on_commit_callbacks(execute=True):
        entitlement_revoke_for_subscription(subscription=subscription)
    after = _one(subscription.user_id, "export")

    # then every answer is right, none raised, and the fallbacks were counted
    assert [(r["allowed"], r["reason"]) for r in before] == [(True, "granted"), (False, "unknown_feature")]
    assert [r["feature"] for r in listed] == ["export", "sso"]
    assert (after["allowed"], after["reason"]) == (False, "no_subscription")
    assert _metric("entitlement_cache_fallbacks_total") >= fallbacks + 4


@pytest.mark.django_db
@override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}})
def test_without_redis_configured_checks_are_answered_from_the_database(
    make_plan: Callable[..., Plan], django_capture_on_commit_callbacks
) -> None:
    # given the embedded local-memory cache of `make run` (no REDIS_URL) and a granted feature
    subscription = SubscriptionFactory(plan=make_plan("export"))
    with django_capture_on_commit_callbacks(execute=True):
        entitlement_grant_for_subscription(subscription=subscription)

    # when checking, then revoking and checking again
    before = _one(subscription.user_id, "export")
    with django_capture_on_commit_callbacks(execute=True):
        entitlement_revoke_for_subscription(subscription=subscription)
    after = _one(subscription.user_id, "export")

    # then both answers are right and nothing raised
    assert (before["allowed"], before["reason"]) == (True, "granted")
    assert (after["allowed"], after["reason"]) == (False, "no_subscription")


@pytest.mark.django_db
def test_list_shows_the_effective_entitlements_with_their_source(make_plan: Callable[..., Plan]) -> None:
    # given an own subscription and an expired one-time feature
    user = UserFactory()
    subscription = SubscriptionFactory(user=user, plan=make_plan("export"))
    entitlement_grant_for_subscription(subscription=subscription)
    # (a second live subscription cannot exist: one per customer, enforced by the database)
    entitlement_grant_one_time(
        user=user, plan=make_plan("old"), source_ref="pi_old", expires_at=timezone.now()
    )

    # when listing twice (cold, then warm)
    cold = entitlement_list(user_id=user.pk)
    warm = entitlement_list(user_id=user.pk)

    # then only the valid one is listed, the same both times
    assert [(r["feature"], r["source"]) for r in cold] == [("export", "own")]
    assert warm == cold
    assert _one(user.pk, "old")["reason"] == "expired"


@pytest.mark.django_db
def test_an_admin_edit_of_an_entitlement_is_seen_on_the_very_next_check(
    make_plan: Callable[..., Plan], django_capture_on_commit_callbacks
) -> None:
    # given a granted feature and a warm snapshot
    subscription = SubscriptionFactory(plan=make_plan("export"))
    with django_capture_on_commit_callbacks(execute=True):
        entitlement_grant_for_subscription(subscription=subscription)
    assert _one(subscription.user_id, "export")["allowed"] is True

    # when staff revoke it in the admin's change form (a plain save, not a service)
    from entitlements.models import Entitlement

    row = Entitlement.objects.get(subscription=subscription)
    row.status = Entitlement.Status.REVOKED
    with django_capture_on_commit_callbacks(execute=True):
        row.save()

    # then the next check refuses it
    assert _one(subscription.user_id, "export")["allowed"] is False
