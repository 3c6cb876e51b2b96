"""A change that removes access stays applied through a Redis outage (issue 14, part 1).

Each test uses a redis-server of its own (devtools.redis_server) as the cache: warm the user's
snapshot, make Redis unreachable (paused with SIGSTOP, or killed and started again from its
append-only file, which brings the old snapshot back), commit the change, check (answered from the
database), bring Redis back, let the retry job run as beat runs it, and check again through the
API, warm.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import transaction
from django.test import Client, override_settings
from django_redis import get_redis_connection
from rest_framework.test import APIClient

from billing.models import Plan
from billing.stripe import gateway as stripe_gateway
from devtools.redis_server import RedisServer
from devtools.testing import StandinServer
from entitlements import cache, hotpath
from entitlements.models import Entitlement, SnapshotInvalidation
from entitlements.services import entitlement_grant_for_subscription
from entitlements.tasks import snapshot_invalidations_retry_task
from payments_project.accounts.tests.factories import UserFactory
from payments_project.tests.helpers import token_client
from subscriptions.models import FamilyMember, Subscription, SubscriptionHistory
from subscriptions.services import subscription_transition
from subscriptions.tests.factories import FamilyFactory, SubscriptionFactory

CHECK = "/api/v1/entitlements/check?feature=export"


@pytest.fixture
def own_redis(tmp_path: Path, settings: Any) -> Iterator[RedisServer]:
    """The cache on a redis-server of this test's own, with short timeouts (a dead Redis costs
    the checks a fraction of a second each, as REDIS_TIMEOUT_SECONDS does in production)."""
    hotpath._HINTS.clear()
    hotpath._script_loaded.clear()
    with RedisServer(tmp_path) as server:
        settings.CACHES = {
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": server.url,
                "KEY_PREFIX": "outage",
                "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
            }
        }
        yield server
        get_redis_connection("default").connection_pool.disconnect()
    hotpath._HINTS.clear()
    hotpath._script_loaded.clear()


def _unreachable(server: RedisServer, fault: str) -> None:
    # Pooled connections are dropped first, as under load (every pooled connection busy): the
    # invalidation then opens a new one, whose handshake times out, and is lost. (A command
    # written to an idle pooled connection of a paused server would be buffered by the kernel and
    # run on resume, hiding the loss.)
    get_redis_connection("default").connection_pool.disconnect()
    if fault == "paused":
        server.pause()
    else:
        server.crash()


def _back(server: RedisServer, fault: str) -> None:
    if fault == "paused":
        server.resume()
    else:
        server.start()  # from its append-only file: the old snapshot is back
    get_redis_connection("default").connection_pool.disconnect()


def _checked(client: APIClient | Client) -> tuple[int, bool, str]:
    response = client.get(CHECK)
    body = response.json()
    return response.status_code, body.get("allowed"), body.get("reason")


def _warm(client: APIClient, user_id: int) -> None:
    assert _checked(client) == (200, True, "granted")  # DRF path: stores the snapshot
    assert _checked(client) == (200, True, "granted")  # hot path: from Redis
    assert cache.snapshot_read_all(user_id=user_id)  # the snapshot is in Redis


def _after_outage(
    server: RedisServer,
    fault: str,
    client: APIClient,
    user_id: int,
    change: Callable[[], None],
    denied_reason: str,
    on_commit: Any,
) -> None:
    """The issue's sequence, with its assertions."""
    _warm(client, user_id)
    _unreachable(server, fault)

    # when the change commits while Redis cannot be reached
    with on_commit(execute=True):
        change()

    # then the check refuses at once (answered from the database) and the drop is kept in PostgreSQL
    assert _checked(client) == (200, False, denied_reason)
    assert user_id in set(SnapshotInvalidation.objects.values_list("user_id", flat=True))

    # when Redis is back and the retry job runs (beat: every ENTITLEMENTS_INVALIDATION_RETRY_SECONDS)
    _back(server, fault)
    applied = snapshot_invalidations_retry_task.delay().get()

    # then the old snapshot is gone and the check keeps refusing, cold then warm from Redis
    assert applied >= 1
    assert SnapshotInvalidation.objects.count() == 0
    assert _checked(client) == (200, False, denied_reason)
    assert _checked(client) == (200, False, denied_reason)
    assert cache.snapshot_read_all(user_id=user_id)  # rebuilt after the change


FAULTS = ["paused", "restarted"]


@pytest.fixture
def subscriber(
    make_plan: Callable[..., Plan], django_capture_on_commit_callbacks: Any
) -> tuple[Subscription, APIClient]:
    subscription: Any = SubscriptionFactory(plan=make_plan("export"))
    with django_capture_on_commit_callbacks(execute=True):
        entitlement_grant_for_subscription(subscription=subscription)
    return subscription, token_client(subscription.user)


def _finance(username: str) -> Any:
    user = UserFactory(username=username, is_staff=True)
    user.groups.add(Group.objects.get(name="finance"))
    return user


@pytest.mark.django_db
@pytest.mark.parametrize("fault", FAULTS)
def test_an_immediate_cancellation_stays_applied_after_redis_returns(
    own_redis: RedisServer,
    fault: str,
    stripe_standin: StandinServer,
    make_plan: Callable[..., Plan],
    django_capture_on_commit_callbacks: Any,
) -> None:
    # given a subscriber entitled to "export", their subscription also in Stripe
    gw = stripe_gateway.client()
    customer = gw.v1.customers.create({"email": "outage@example.com"})
    product = gw.v1.products.create({"name": "Pro"})
    price = gw.v1.prices.create(
        {"product": product.id, "currency": "usd", "unit_amount": 999, "recurring": {"interval": "month"}}
    )
    card = gw.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    gw.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": card.id}})
    remote = gw.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    subscription: Any = SubscriptionFactory(plan=make_plan("export"), stripe_subscription_id=remote.id)
    entitlement_grant_for_subscription(subscription=subscription)
    client = token_client(subscription.user)
    staff = APIClient()
    staff.force_authenticate(_finance("finance-outage"))

    def cancel_now() -> None:
        response = staff.post(
            f"/api/v1/subscriptions/{subscription.pk}/cancel", {"immediately": True}, format="json"
        )
        assert (response.status_code, response.json()["status"]) == (200, "cancelled")

    # when / then
    _after_outage(
        own_redis,
        fault,
        client,
        subscription.user_id,
        cancel_now,
        "no_subscription",
        django_capture_on_commit_callbacks,
    )


@pytest.mark.django_db
@pytest.mark.parametrize("fault", FAULTS)
def test_a_suspension_stays_applied_after_redis_returns(
    own_redis: RedisServer,
    fault: str,
    subscriber: tuple[Subscription, APIClient],
    django_capture_on_commit_callbacks: Any,
) -> None:
    subscription, client = subscriber
    staff = _finance("finance-suspends")

    def suspend() -> None:
        subscription_transition(
            subscription=subscription,
            to_status=Subscription.Status.SUSPENDED,
            cause=SubscriptionHistory.Cause.STAFF,
            staff_user=staff,
        )

    _after_outage(
        own_redis,
        fault,
        client,
        subscription.user_id,
        suspend,
        "suspended",
        django_capture_on_commit_callbacks,
    )


@pytest.mark.django_db
@pytest.mark.parametrize("fault", FAULTS)
def test_a_removal_from_the_family_stays_applied_after_redis_returns(
    own_redis: RedisServer,
    fault: str,
    make_plan: Callable[..., Plan],
    django_capture_on_commit_callbacks: Any,
) -> None:
    # given a family on a family plan and a member entitled through it
    family: Any = FamilyFactory()
    subscription: Any = SubscriptionFactory(
        user=family.owner, family=family, plan=make_plan("export", is_family=True, max_members=4)
    )
    entitlement_grant_for_subscription(subscription=subscription)
    member = UserFactory(username="member-outage")
    FamilyMember.objects.create(family=family, user=member)
    owner = token_client(family.owner)

    def remove() -> None:
        response = owner.delete(f"/api/v1/families/{family.pk}/members/{member.pk}")
        assert response.status_code == 204

    _after_outage(
        own_redis,
        fault,
        token_client(member),
        member.pk,
        remove,
        "no_subscription",
        django_capture_on_commit_callbacks,
    )


@pytest.mark.django_db
@pytest.mark.parametrize("fault", FAULTS)
def test_a_staff_revoke_in_the_admin_stays_applied_after_redis_returns(
    own_redis: RedisServer,
    fault: str,
    subscriber: tuple[Subscription, APIClient],
    django_capture_on_commit_callbacks: Any,
) -> None:
    subscription, client = subscriber
    admin = Client()
    admin.force_login(_finance("finance-revokes"))
    row = Entitlement.objects.get(subscription=subscription)

    def revoke() -> None:
        response = admin.post(
            "/admin/entitlements/entitlement/", {"action": "revoke_selected", "_selected_action": [row.pk]}
        )
        assert response.status_code == 302
        row.refresh_from_db()
        assert row.status == Entitlement.Status.REVOKED

    # a revoked row is left out of the snapshot: the feature reads as not in the plan
    _after_outage(
        own_redis,
        fault,
        client,
        subscription.user_id,
        revoke,
        "no_subscription",
        django_capture_on_commit_callbacks,
    )


@pytest.mark.django_db
def test_the_retry_job_keeps_the_drops_while_redis_is_unreachable(
    own_redis: RedisServer,
    subscriber: tuple[Subscription, APIClient],
    django_capture_on_commit_callbacks: Any,
) -> None:
    # given a drop Redis missed
    subscription, client = subscriber
    _warm(client, subscription.user_id)
    _unreachable(own_redis, "paused")
    with django_capture_on_commit_callbacks(execute=True):
        subscription_transition(
            subscription=subscription,
            to_status=Subscription.Status.CANCELLED,
            cause=SubscriptionHistory.Cause.STAFF,
        )

    # when the job runs while Redis is still unreachable
    applied = snapshot_invalidations_retry_task.delay().get()

    # then nothing was applied and the row waits for the next run
    assert applied == 0
    assert set(SnapshotInvalidation.objects.values_list("user_id", flat=True)) == {subscription.user_id}
    own_redis.resume()


@pytest.mark.django_db
def test_with_redis_up_the_drop_is_applied_after_commit_and_its_row_deleted(
    subscriber: tuple[Subscription, APIClient], django_capture_on_commit_callbacks: Any
) -> None:
    # given a warm snapshot on the shared test Redis
    subscription, client = subscriber
    _warm(client, subscription.user_id)

    # when a suspension commits
    with django_capture_on_commit_callbacks(execute=True):
        subscription_transition(
            subscription=subscription,
            to_status=Subscription.Status.SUSPENDED,
            cause=SubscriptionHistory.Cause.STAFF,
        )

    # then the snapshot was dropped at once and no row waits for the retry job
    assert cache.snapshot_read_all(user_id=subscription.user_id) == {}
    assert SnapshotInvalidation.objects.count() == 0
    assert _checked(client) == (200, False, "suspended")


@pytest.mark.django_db
def test_a_change_rolled_back_leaves_no_drop_to_retry(subscriber: tuple[Subscription, APIClient]) -> None:
    # given a subscriber
    subscription, _ = subscriber
    before = SnapshotInvalidation.objects.count()  # the grant's own, never committed in this test

    # when a suspension fails after its entitlement rows were changed
    with pytest.raises(RuntimeError), transaction.atomic():
        subscription_transition(
            subscription=subscription,
            to_status=Subscription.Status.SUSPENDED,
            cause=SubscriptionHistory.Cause.STAFF,
        )
        raise RuntimeError("later step failed")

    # then its drop rolled back with it
    assert SnapshotInvalidation.objects.count() == before


@pytest.mark.django_db
@override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}})
def test_without_redis_nothing_is_recorded(make_plan: Callable[..., Plan]) -> None:
    # given the local-memory cache of `make run` (no snapshots exist) and a subscriber
    subscription: Any = SubscriptionFactory(plan=make_plan("export"))
    entitlement_grant_for_subscription(subscription=subscription)

    # when a change commits
    subscription_transition(
        subscription=subscription,
        to_status=Subscription.Status.SUSPENDED,
        cause=SubscriptionHistory.Cause.STAFF,
    )

    # then no drop is recorded
    assert SnapshotInvalidation.objects.count() == 0
