from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import redis.client
from django.contrib.auth.models import Group
from django.test import override_settings
from rest_framework import exceptions
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from billing.models import Plan
from entitlements.services import entitlement_grant_for_subscription
from entitlements.tests.conftest import make_plan  # noqa: F401 - the fixture
from payments_project import authentication
from payments_project.accounts.tests.factories import UserFactory as _UserFactory
from subscriptions.tests.factories import SubscriptionFactory


def _user(subscription: Any) -> Any:
    return subscription.user


def UserFactory(**fields: Any) -> Any:
    return _UserFactory(**fields)


CLOSED_PORT_REDIS = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
    }
}


def _client(token: Token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.mark.django_db
def test_a_warm_check_makes_no_database_query(
    make_plan: Callable[..., Plan],  # noqa: F811
    django_assert_num_queries: Any,
) -> None:
    # given a subscriber whose token and entitlements were read once (both snapshots warm)
    subscription = SubscriptionFactory(plan=make_plan("export"))
    entitlement_grant_for_subscription(subscription=subscription)
    client = _client(Token.objects.create(user=_user(subscription)))
    first = client.get("/api/v1/entitlements/check?feature=export")

    # when they check again
    with django_assert_num_queries(0):
        response = client.get("/api/v1/entitlements/check?feature=export")

    # then the answer is the same, without touching the database
    assert first.status_code == 200
    assert response.status_code == 200
    assert response.json() == first.json()
    assert response.json()["allowed"] is True


@pytest.mark.django_db
def test_a_warm_check_is_one_redis_command(make_plan: Callable[..., Plan], monkeypatch: Any) -> None:  # noqa: F811
    # given a warm subscriber
    subscription = SubscriptionFactory(plan=make_plan("export"))
    entitlement_grant_for_subscription(subscription=subscription)
    client = _client(Token.objects.create(user=_user(subscription)))
    client.get("/api/v1/entitlements/check?feature=export")
    sent: list[str] = []
    original = redis.client.Redis.execute_command

    def counting(self: redis.client.Redis, *args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return original(self, *args, **options)

    monkeypatch.setattr(redis.client.Redis, "execute_command", counting)

    # when they check again
    response = client.get("/api/v1/entitlements/check?feature=export")

    # then: the token snapshot, the rate-limit counter and the entitlement snapshot, in one script
    # (entitlements.hotpath)
    assert response.status_code == 200
    assert sent == ["EVALSHA"]


@pytest.mark.django_db
def test_a_deleted_token_is_refused_on_the_very_next_request() -> None:
    # given a token used once (its snapshot is warm)
    token = Token.objects.create(user=UserFactory())
    client = _client(token)
    before = client.get("/api/v1/me/")

    # when the token is deleted
    token.delete()
    response = client.get("/api/v1/me/")

    # then the next request is refused
    assert before.status_code == 200
    assert response.status_code == 401
    assert response.json()["error"] == {
        "code": "authentication_failed",
        "message": "Invalid token.",
        "fields": {},
    }


@pytest.mark.django_db
@pytest.mark.parametrize("update_fields", [None, ["is_active"]])
def test_a_deactivated_user_is_refused_on_the_very_next_request(update_fields: list[str] | None) -> None:
    # given a user whose token snapshot is warm
    user = UserFactory()
    client = _client(Token.objects.create(user=user))
    before = client.get("/api/v1/me/")

    # when the user is deactivated
    user.is_active = False
    user.save(update_fields=update_fields)
    response = client.get("/api/v1/me/")

    # then the next request is refused
    assert before.status_code == 200
    assert response.status_code == 401
    assert response.json()["error"] == {
        "code": "authentication_failed",
        "message": "User inactive or deleted.",
        "fields": {},
    }


@pytest.mark.django_db
def test_a_deleted_user_is_refused_on_the_very_next_request() -> None:
    # given a user whose token snapshot is warm
    user = UserFactory()
    client = _client(Token.objects.create(user=user))
    before = client.get("/api/v1/me/")

    # when the user is deleted (the token goes with it)
    user.delete()
    response = client.get("/api/v1/me/")

    # then
    assert before.status_code == 200
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid token."


@pytest.mark.django_db
def test_a_superuser_change_applies_on_the_very_next_request() -> None:
    # given ana (not a superuser, snapshot warm) and bob
    ana, bob = UserFactory(username="ana"), UserFactory(username="bob")
    client = _client(Token.objects.create(user=ana))
    refused = client.get(f"/api/v1/me/?user_id={bob.pk}")

    # when ana is made a superuser
    ana.is_superuser = True
    ana.save()
    answered = client.get(f"/api/v1/me/?user_id={bob.pk}")

    # then she may act for bob from the next request on
    assert refused.status_code == 403
    assert answered.status_code == 200
    assert answered.json()["username"] == "bob"


@pytest.mark.django_db
def test_a_warm_user_still_has_its_other_fields_and_permissions() -> None:
    # given a service account (permission through its group) and bob, the service's snapshot warm
    service = UserFactory(username="checkout-service", email="svc@example.com")
    service.groups.add(Group.objects.get(name="service"))
    bob = UserFactory(username="bob")
    client = _client(Token.objects.create(user=service))
    client.get("/api/v1/me/")

    # when the service asks about itself and for bob, warm
    me = client.get("/api/v1/me/")
    for_bob = client.get(f"/api/v1/me/?user_id={bob.pk}")

    # then the deferred fields load from the database and the permission is checked there
    assert me.json() == {
        "id": service.pk,
        "username": "checkout-service",
        "email": "svc@example.com",
        "is_staff": False,
        "can_act_for_any_user": True,
        "can_read_any_user": True,
    }
    assert for_bob.status_code == 200
    assert for_bob.json()["username"] == "bob"


@pytest.mark.django_db
def test_a_fill_that_raced_an_invalidation_is_not_stored() -> None:
    # given a fill that read the generation before an invalidation (e.g. a deactivation committing)
    user = UserFactory()
    token = Token.objects.create(user=user)
    _, generation = authentication._read(token.key)
    authentication.token_cache_invalidate([token.key])

    # when it writes its (possibly stale) snapshot
    authentication._write(token.key, generation, user)

    # then nothing was stored, and a fill with the fresh generation is
    snapshot, fresh = authentication._read(token.key)
    authentication._write(token.key, fresh, user)
    assert snapshot is None
    assert fresh == "2"
    assert authentication._read(token.key)[0] == f"{user.pk}|1|0|0".encode()


@pytest.mark.django_db
def test_a_last_login_update_keeps_the_snapshot() -> None:
    # given a warm snapshot
    user = UserFactory()
    token = Token.objects.create(user=user)
    _client(token).get("/api/v1/me/")

    # when only last_login is saved (what a login does)
    user.save(update_fields=["last_login"])

    # then the snapshot is still there
    assert authentication._read(token.key) == (f"{user.pk}|1|0|0".encode(), "1")


@pytest.mark.django_db
@override_settings(CACHES=CLOSED_PORT_REDIS)
def test_with_redis_down_tokens_authenticate_from_the_database() -> None:
    # given Redis unreachable, a valid token and a deleted one
    user = UserFactory(username="ana")
    client = _client(Token.objects.create(user=user))
    gone = Token.objects.create(user=UserFactory())
    gone_client = _client(gone)
    gone.delete()

    # when both are used
    response = client.get("/api/v1/me/")
    refused = gone_client.get("/api/v1/me/")

    # then the valid one authenticates from the database, the deleted one is refused
    assert response.status_code == 200
    assert response.json()["username"] == "ana"
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "Invalid token."


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("", None),
        ("Token abc123", "abc123"),
        (b"token \t abc123 ", "abc123"),  # the keyword in any case, any ASCII whitespace
        ("Bearer abc123", None),
        ("Token\u00a0abc123", None),  # a no-break space is no separator: not the Token scheme
        ("Token caf\u00c3\u00a9", "caf\u00e9"),  # the header's ISO-8859-1 bytes, read as UTF-8
    ],
)
def test_token_header_key_splits_as_drf(header: str | bytes, key: str | None) -> None:
    assert authentication.token_header_key(header) == key


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Token", "Invalid token header. No credentials provided."),
        ("Token abc 123", "Invalid token header. Token string should not contain spaces."),
        (b"Token \xff", "Invalid token header. Token string should not contain invalid characters."),
    ],
)
def test_token_header_key_refuses_a_malformed_token_header(header: str | bytes, message: str) -> None:
    with pytest.raises(exceptions.AuthenticationFailed) as refused:
        authentication.token_header_key(header)

    assert str(refused.value.detail) == message


def test_token_header_key_raises_for_a_header_outside_iso_8859_1() -> None:
    with pytest.raises(UnicodeEncodeError):
        authentication.token_header_key("Token \u20ac")


@pytest.mark.django_db
def test_a_malformed_token_header_is_401_with_drfs_message(api_client: APIClient) -> None:
    api_client.credentials(HTTP_AUTHORIZATION="Token abc 123")

    response = api_client.get("/api/v1/me/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["error"] == {
        "code": "authentication_failed",
        "message": "Invalid token header. Token string should not contain spaces.",
        "fields": {},
    }


@pytest.mark.parametrize(("flags", "active"), [((True, False, False), True), ((False, True, True), False)])
def test_a_token_snapshot_reads_back_and_starts_with_the_prefix_only_when_active(
    flags: tuple[bool, bool, bool], active: bool
) -> None:
    # given a user's cached fields
    user = SimpleNamespace(pk=42, **dict(zip(authentication.CACHED_USER_FIELDS, flags, strict=True)))

    # when its snapshot is written and read
    value = authentication.token_snapshot_value(user)

    # then
    assert authentication.token_snapshot_read(value.encode()) == (
        "42",
        dict(zip(authentication.CACHED_USER_FIELDS, flags, strict=True)),
    )
    assert value.startswith(authentication.token_snapshot_prefix(42)) is active
    assert not value.startswith(authentication.token_snapshot_prefix(4))
