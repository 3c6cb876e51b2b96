"""The per-user entitlement snapshot in Redis: one hash per user, guarded by a version counter.

Layout (keys go through the cache's KEY_PREFIX/VERSION, so they follow CACHES overrides):

- `ent:s:<user_id>`: a hash, field `__meta` (JSON: has_subscription) plus one field per feature
  code the user holds a row for (JSON entry, see selectors._entry). A warm check of N codes is one
  HMGET of `__meta` and the N codes.
- `ent:v:<user_id>`: a counter. Invalidation (after commit) INCRs it and DELs the hash in one
  MULTI. A rebuild reads the counter BEFORE reading the database and writes the hash through a Lua
  script only if the counter still holds what it read, so a rebuild that raced an invalidation
  never stores its stale result.

An invalidation is first recorded in PostgreSQL (SnapshotInvalidation, in the transaction of the
change) and the row deleted only once Redis confirmed the drop, so one sent while Redis was
unreachable is applied again (entitlements.services.snapshot_invalidations_retry, a beat job)
instead of being lost with the old snapshot coming back when Redis does.

Every function raises CacheUnavailable when Redis cannot be reached; callers fall back to the
database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from django.conf import settings
from django.core.cache import caches
from django.db import DatabaseError, transaction
from django_redis import get_redis_connection

from entitlements.metrics import entitlement_cache_fallbacks_total
from entitlements.models import SnapshotInvalidation

# Redis down, or the cache is not Redis (the local-memory default of `make run`): checks are then
# answered from the database.
from payments_project.authentication import REDIS_ERRORS

logger = logging.getLogger(__name__)

META_FIELD = "__meta"

# KEYS[1] snapshot hash, KEYS[2] version counter; ARGV[1] version read before the DB read,
# ARGV[2] ttl seconds, ARGV[3..] field, value pairs.
_WRITE_IF_VERSION = """
local current = redis.call('GET', KEYS[2]) or '0'
if current ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""


class CacheUnavailable(Exception):
    """Redis could not be reached; the caller answers from the database."""


def _conn() -> Any:
    return get_redis_connection("default")


def snapshot_key(user_id: int) -> str:
    return str(caches["default"].make_key(f"ent:s:{user_id}"))


def version_key(user_id: int) -> str:
    return str(caches["default"].make_key(f"ent:v:{user_id}"))


def snapshot_ttl() -> int:
    # The last resort: bounds how long a snapshot can outlive an invalidation that Redis itself
    # confirmed and then lost (a failover to a lagging replica, a restore from an old dump).
    # Invalidations Redis never confirmed are re-applied by the retry job within seconds.
    return int(settings.ENTITLEMENTS_SNAPSHOT_TTL_SECONDS)


def snapshot_read_fields(*, user_id: int, codes: Sequence[str]) -> list[bytes | None]:
    """ONE command: HMGET of the meta field then each code. result[0] is None on a miss."""
    try:
        return list(_conn().hmget(snapshot_key(user_id), [META_FIELD, *codes]))
    except REDIS_ERRORS as exc:
        raise CacheUnavailable(str(exc)) from exc


def snapshot_read_all(*, user_id: int) -> dict[bytes, bytes]:
    """ONE command: HGETALL. Empty on a miss (a built snapshot always has the meta field)."""
    try:
        return dict(_conn().hgetall(snapshot_key(user_id)))
    except REDIS_ERRORS as exc:
        raise CacheUnavailable(str(exc)) from exc


def snapshot_version(*, user_id: int) -> str:
    try:
        raw = _conn().get(version_key(user_id))
    except REDIS_ERRORS as exc:
        raise CacheUnavailable(str(exc)) from exc
    return "0" if raw is None else raw.decode()


def snapshot_write(*, user_id: int, version: str, meta: dict[str, Any], entries: dict[str, Any]) -> bool:
    """Store the snapshot if no invalidation happened since `version` was read; True if stored."""
    args: list[Any] = [version, snapshot_ttl(), META_FIELD, orjson.dumps(meta)]
    for code, entry in entries.items():
        args += [code, orjson.dumps(entry)]
    try:
        conn = _conn()
        script = conn.register_script(_WRITE_IF_VERSION)
        return bool(script(keys=[snapshot_key(user_id), version_key(user_id)], args=args, client=conn))
    except REDIS_ERRORS as exc:
        raise CacheUnavailable(str(exc)) from exc


def redis_configured() -> bool:
    """Snapshots exist only in Redis (not in the local-memory cache of `make run`)."""
    return "django_redis" in settings.CACHES["default"]["BACKEND"]


def snapshot_invalidate(*, user_ids: Iterable[int]) -> bool:
    """Bump each user's version and drop the snapshot, atomically per call. Never raises.

    True when Redis confirmed (or there is no Redis: no snapshot to drop), False when it could not
    be reached: the caller keeps its SnapshotInvalidation rows for the retry job.
    """
    ids = sorted(set(user_ids))
    if not ids or not redis_configured():
        return True
    try:
        pipe = _conn().pipeline(transaction=True)
        for user_id in ids:
            pipe.incr(version_key(user_id))
            pipe.delete(snapshot_key(user_id))
        pipe.execute()
    except REDIS_ERRORS:
        entitlement_cache_fallbacks_total.inc()
        logger.warning("entitlement cache invalidation failed for users %s; retried by the beat job", ids)
        return False
    return True


def snapshot_invalidate_on_commit(*, user_ids: Iterable[int]) -> None:
    """Drop the users' snapshots once the current transaction commits, durably.

    One SnapshotInvalidation row per user is written now, in the caller's transaction (rolled back
    with it); after commit the snapshots are dropped and, when Redis confirmed, the rows deleted.
    Rows left (Redis unreachable, process killed before its after-commit work) are re-applied by
    the beat job until Redis confirms: a snapshot older than the change is never served for longer
    than that job's period after Redis answers again (README, "Entitlement checks").
    """
    ids = sorted(set(user_ids))
    if not ids or not redis_configured():
        return
    rows = SnapshotInvalidation.objects.bulk_create(
        [SnapshotInvalidation(user_id=user_id) for user_id in ids]
    )
    pks = [row.pk for row in rows]
    transaction.on_commit(lambda: _invalidate_and_forget(user_ids=ids, pks=pks))


def _invalidate_and_forget(*, user_ids: list[int], pks: list[int]) -> None:
    if not snapshot_invalidate(user_ids=user_ids):
        return  # the rows stay for the retry job
    try:
        SnapshotInvalidation.objects.filter(pk__in=pks).delete()
    except DatabaseError:
        # Applied already; the retry job applies it once more (a harmless drop) and deletes them.
        logger.warning("could not delete applied snapshot invalidations %s", pks, exc_info=True)
