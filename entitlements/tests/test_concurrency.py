from __future__ import annotations

import json
import threading
from collections.abc import Callable

import pytest
from django.db import connection

from billing.models import Plan
from entitlements import cache
from entitlements.selectors import entitlement_check, entitlement_snapshot_build
from entitlements.services import (
    entitlement_grant_for_subscription,
    entitlement_restore_for_subscription,
    entitlement_suspend_for_subscription,
)
from subscriptions.tests.factories import SubscriptionFactory


@pytest.mark.django_db(transaction=True)
def test_invalidations_racing_rebuilds_leave_a_correct_cache(make_plan: Callable[..., Plan]) -> None:
    # given a granted feature
    subscription = SubscriptionFactory(plan=make_plan("export", "sso"))
    entitlement_grant_for_subscription(subscription=subscription)
    user_id = subscription.user_id
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                cache.snapshot_invalidate(user_ids=[user_id])  # force a cold rebuild each time
                entitlement_check(user_id=user_id, features=["export", "sso"])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    def writer() -> None:
        try:
            for _ in range(40):
                # each service commits (autocommit) then invalidates on commit
                entitlement_suspend_for_subscription(subscription=subscription)
                entitlement_check(user_id=user_id, features=["export"])
                entitlement_restore_for_subscription(subscription=subscription)
                entitlement_check(user_id=user_id, features=["export"])
            entitlement_suspend_for_subscription(subscription=subscription)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            stop.set()
            connection.close()

    # when 4 threads rebuild snapshots while another flips the status 81 times
    threads = [threading.Thread(target=reader) for _ in range(4)] + [threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    # then nothing failed, any snapshot left in Redis equals the database, and the answer is right
    assert errors == []
    raw = cache.snapshot_read_all(user_id=user_id)
    meta, entries = entitlement_snapshot_build(user_id=user_id)
    if raw:
        stored = {key.decode(): json.loads(value) for key, value in raw.items()}
        assert stored == {cache.META_FIELD: meta, **entries}
    results = entitlement_check(user_id=user_id, features=["export", "sso"])
    assert [(r["allowed"], r["reason"]) for r in results] == [(False, "suspended"), (False, "suspended")]
    warm = cache.snapshot_read_all(user_id=user_id)
    assert {key.decode(): json.loads(value) for key, value in warm.items()} == {
        cache.META_FIELD: meta,
        **entries,
    }
