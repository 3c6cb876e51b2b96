"""Token authentication without a database query per request.

`CachedTokenAuthentication` keeps, per token key, the few user fields authentication needs
(id, is_active, is_staff, is_superuser) in Redis (the default django-redis cache) for
AUTH_TOKEN_CACHE_TTL_SECONDS. A warm request is ONE Redis command (MGET of the snapshot and its
generation counter) and no SQL. The user it returns is a real instance of the configured user
model loaded with only those fields: any other field (username, email...) is deferred and loaded
from the database on first access, and permissions (`has_perm`, groups) query the database as usual.

Keys (through the cache's KEY_PREFIX/VERSION):

- `auth:t:<token key>`: "user_id|is_active|is_staff|is_superuser" (1/0), with a TTL
  (written by `token_snapshot_value`, read by `token_snapshot_read`).
- `auth:g:<token key>`: a generation counter. Invalidation INCRs it and DELs the snapshot in one
  MULTI; a fill reads the counter (in the same MGET as the miss) BEFORE reading the database and
  writes through a Lua script only if it is unchanged, so a fill that raced an invalidation (e.g. a
  read of the row before the deactivating transaction committed) never stores its stale result.

Invalidation (model signals, cache upkeep only): a Token saved or deleted (deleting a user
cascades to its token), and a user saved (unless `update_fields` shows none of the cached fields
changed, e.g. the login's last_login update). It runs at once AND again after commit: at once so
the rest of the transaction sees it, after commit so a concurrent fill of the old row is discarded.

The `Authorization` header is split by `token_header_key`, DRF's rule; the entitlement hot path
(entitlements.hotpath) splits it and reads the snapshot with the same functions.

Redis unreachable: authentication answers from the database (DRF's query), never refuses for it.
A snapshot outlives its source only when an invalidation was lost (Redis down at that moment, or
a change that sends no signal: queryset.update(), raw SQL), and then for at most the TTL.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.db import connection, transaction
from django.db.models.signals import post_delete, post_save
from django.utils.translation import gettext_lazy as _
from django_redis import get_redis_connection
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError
from rest_framework import HTTP_HEADER_ENCODING, exceptions
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.authtoken.models import Token
from rest_framework.request import Request

logger = logging.getLogger(__name__)

# NotImplementedError: the default cache is not django-redis (development): no token cache.
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    RedisError,
    ConnectionInterrupted,
    OSError,
    NotImplementedError,
)
CACHED_USER_FIELDS = ("is_active", "is_staff", "is_superuser")  # is_active first: token_snapshot_prefix
GENERATION_TTL_SECONDS = 24 * 3600  # far longer than any fill: no ABA on an expired counter

# KEYS[1] snapshot, KEYS[2] generation; ARGV[1] generation read before the DB read, ARGV[2] ttl,
# ARGV[3] value.
_WRITE_IF_GENERATION = """
local current = redis.call('GET', KEYS[2]) or '0'
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[3], 'EX', tonumber(ARGV[2]))
return 1
"""


class _CacheUnavailable(Exception):
    pass


def _conn() -> Any:
    return get_redis_connection("default")


def token_cache_keys(token_key: str) -> tuple[str, str]:
    """(snapshot key, generation key) of a token key."""
    make_key = caches["default"].make_key
    return str(make_key(f"auth:t:{token_key}")), str(make_key(f"auth:g:{token_key}"))


_keys = token_cache_keys


def token_cache_ttl() -> int:
    return int(settings.AUTH_TOKEN_CACHE_TTL_SECONDS)


def token_header_key(header: str | bytes, *, keyword: str = TokenAuthentication.keyword) -> str | None:
    """The key of an `Authorization: <keyword> <key>` header, split as DRF's TokenAuthentication
    splits it: ISO-8859-1 bytes on ASCII whitespace only (a no-break space is no separator).

    None: no header, or another scheme. AuthenticationFailed (DRF's messages): the keyword without
    a key, with several, or with one that is not UTF-8. UnicodeEncodeError: a str header that is
    not ISO-8859-1, as from DRF's get_authorization_header.
    """
    parts = (header.encode(HTTP_HEADER_ENCODING) if isinstance(header, str) else header).split()
    if not parts or parts[0].lower() != keyword.lower().encode():
        return None
    if len(parts) == 1:
        raise exceptions.AuthenticationFailed(_("Invalid token header. No credentials provided."))
    if len(parts) > 2:
        raise exceptions.AuthenticationFailed(
            _("Invalid token header. Token string should not contain spaces.")
        )
    try:
        return parts[1].decode()
    except UnicodeError:
        message = _("Invalid token header. Token string should not contain invalid characters.")
        raise exceptions.AuthenticationFailed(message) from None


def token_snapshot_value(user: Any) -> str:
    """What `auth:t:<token key>` holds for `user` (see the module docstring)."""
    return "|".join([str(user.pk), *("1" if getattr(user, name) else "0" for name in CACHED_USER_FIELDS)])


def token_snapshot_read(snapshot: bytes) -> tuple[str, dict[str, bool]]:
    """(user id as written, {cached field: flag}) of a snapshot; ValueError if it is not one."""
    user_id, *flags = snapshot.decode().split("|")
    return user_id, {name: flag == "1" for name, flag in zip(CACHED_USER_FIELDS, flags, strict=True)}


def token_snapshot_prefix(user_id: int) -> str:
    """How every snapshot of the ACTIVE user `user_id` starts (is_active is the first flag): the
    hot path's script compares it instead of parsing the snapshot."""
    return f"{user_id}|1|"


def _read(token_key: str) -> tuple[bytes | None, str]:
    """ONE command: (snapshot or None, generation)."""
    try:
        snapshot, generation = _conn().mget(_keys(token_key))
    except REDIS_ERRORS as exc:
        raise _CacheUnavailable(str(exc)) from exc
    return snapshot, "0" if generation is None else generation.decode()


def _write(token_key: str, generation: str, user: Any) -> None:
    value = token_snapshot_value(user)
    try:
        conn = _conn()
        script = conn.register_script(_WRITE_IF_GENERATION)
        script(keys=list(_keys(token_key)), args=[generation, token_cache_ttl(), value], client=conn)
    except REDIS_ERRORS:
        logger.warning("token cache fill failed", exc_info=True)


def token_cache_invalidate(token_keys: list[str]) -> None:
    """Drop the snapshots and bump their generations, atomically. Never raises."""
    if not token_keys or "django_redis" not in settings.CACHES["default"]["BACKEND"]:
        return  # no Redis (the local-memory default of `make run`): nothing is cached
    try:
        pipe = _conn().pipeline(transaction=True)
        for token_key in token_keys:
            snapshot_key, generation_key = _keys(token_key)
            pipe.incr(generation_key)
            pipe.expire(generation_key, GENERATION_TTL_SECONDS)
            pipe.delete(snapshot_key)
        pipe.execute()
    except REDIS_ERRORS:
        # The snapshot (if Redis kept it) lives until its TTL: see token_cache_ttl().
        logger.warning("token cache invalidation failed for %d token(s)", len(token_keys), exc_info=True)


def _invalidate_now_and_on_commit(token_keys: list[str]) -> None:
    if not token_keys:
        return
    token_cache_invalidate(token_keys)
    if connection.in_atomic_block:
        transaction.on_commit(lambda: token_cache_invalidate(token_keys))


def _user_from_snapshot(snapshot: bytes) -> Any:
    user_id, flags = token_snapshot_read(snapshot)
    model = get_user_model()
    pk_name = model._meta.pk.attname
    known = {pk_name: model._meta.pk.to_python(user_id)}
    known.update(flags)
    # from_db with only these fields: the others are deferred (loaded from the DB if ever read).
    field_names = [f.attname for f in model._meta.concrete_fields if f.attname in known]
    return model.from_db("default", field_names, [known[name] for name in field_names])


class CachedTokenAuthentication(TokenAuthentication):
    """DRF's TokenAuthentication, answered from Redis when warm (see the module docstring)."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        # DRF's own, the header split by token_header_key: the hot path splits it with the same function.
        key = token_header_key(get_authorization_header(request), keyword=self.keyword)
        return None if key is None else self.authenticate_credentials(key)

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        try:
            snapshot, generation = _read(key)
        except _CacheUnavailable:
            return super().authenticate_credentials(key)
        if snapshot is not None:
            user = _user_from_snapshot(snapshot)
            if not user.is_active:
                raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
            model = self.get_model()
            token: Any = model.from_db("default", ["key", "user_id"], [key, user.pk])
            token.user = user
            return user, token
        user, token = super().authenticate_credentials(key)  # raises for an unknown/inactive user
        _write(key, generation, user)
        return user, token


# --- invalidation (cache upkeep, not business logic) ----------------------------------------------


def _on_token_change(sender: Any, instance: Token, **kwargs: Any) -> None:
    _invalidate_now_and_on_commit([instance.key])


def _on_user_save(
    sender: Any, instance: Any, created: bool, update_fields: Any = None, **kwargs: Any
) -> None:
    if created:
        return  # no token yet
    if update_fields is not None and not set(update_fields) & set(CACHED_USER_FIELDS):
        return
    keys = [str(key) for key in Token.objects.filter(user_id=instance.pk).values_list("key", flat=True)]
    _invalidate_now_and_on_commit(keys)


post_save.connect(_on_token_change, sender=Token, dispatch_uid="auth_token_cache_token_saved")
post_delete.connect(_on_token_change, sender=Token, dispatch_uid="auth_token_cache_token_deleted")
post_save.connect(_on_user_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="auth_token_cache_user_saved")
