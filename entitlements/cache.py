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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
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
from payments_project.redis_client import redis_script, redis_script_run

logger = logging.getLogger(__name__)

# The snapshot's own fields start with it; no feature code can (billing's code_validator), so a
# code that does names no feature, whatever the hash holds under that name.
RESERVED_PREFIX = "__"
META_FIELD = "__meta"
# The usage app's counters, mirrored into the same hash (one field per feature, see UsageMirror),
# so a warm check reads limit and used in its one HMGET / one script.
USAGE_FIELD_PREFIX = "__u:"

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


# KEYS: snapshot hashes; ARGV: per key, field then "period_start:used:reserved:seq". Written only into
# a snapshot that exists (a missing one is rebuilt from PostgreSQL) and only when newer: a later
# period, or the same period with a higher seq (mirror writes may arrive out of order).
_USAGE_WRITE = """
local written = 0
for i = 1, #KEYS do
    local field, value = ARGV[2 * i - 1], ARGV[2 * i]
    if redis.call('EXISTS', KEYS[i]) == 1 then
        local old = redis.call('HGET', KEYS[i], field)
        local newer = true
        if old then
            local op, os = string.match(old, '^([^:]+):[^:]+:[^:]+:([^:]+)$')
            local np, ns = string.match(value, '^([^:]+):[^:]+:[^:]+:([^:]+)$')
            if op and np then
                local opn, npn = tonumber(op), tonumber(np)
                newer = npn > opn or (npn == opn and tonumber(ns) > tonumber(os))
            end
        end
        if newer then
            redis.call('HSET', KEYS[i], field, value)
            written = written + 1
        end
    end
end
return written
"""


@dataclass(frozen=True)
class UsageMirror:
    """One counter's values for one user's snapshot (a family pool: one per member)."""

    user_id: int
    feature: str
    period_start: float  # epoch seconds
    used: int
    reserved: int
    seq: int

    def value(self) -> str:
        return usage_value(self.period_start, self.used, self.reserved, self.seq)


def usage_field(code: str) -> str:
    return USAGE_FIELD_PREFIX + code


def usage_value(period_start: float, used: int, reserved: int, seq: int) -> str:
    return f"{period_start:.6f}:{used}:{reserved}:{seq}"


def usage_parse(raw: bytes | str | None) -> tuple[float, int, int] | None:
    """(period start, used, reserved) of a mirrored counter, or None."""
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        start, used, reserved, _seq = text.split(":")
        return float(start), int(used), int(reserved)
    except ValueError:
        return None


# The usage app's reader of its counters in PostgreSQL (set by usage.apps.UsageConfig.ready: this
# app must not import usage). Called when a snapshot is built: (user_id, [(feature, subject, period
# start epoch)]) -> {feature: (period start, used, reserved, seq)}.
UsageProvider = Callable[..., dict[str, tuple[float, int, int, int]]]
usage_provider: dict[str, UsageProvider] = {}


def snapshot_fields(codes: Sequence[str]) -> list[str]:
    """The fields a check of `codes` reads: the meta field, each code, then each code's usage."""
    return [META_FIELD, *codes, *(usage_field(code) for code in codes)]


_CODES_SEPARATOR = "\n"  # what snapshot_read_lua splits on


def snapshot_codes_arg(codes: Sequence[str]) -> str | None:
    """The codes as one argument for snapshot_read_lua, or None for codes it would read otherwise
    (an empty one, or one holding the separator: no feature code a check takes does)."""
    joined = _CODES_SEPARATOR.join(codes)
    if "" in codes or joined.count(_CODES_SEPARATOR) != len(codes) - 1:
        return None
    return joined


def snapshot_read_lua(*, key: str, codes: str, into: str) -> str:
    """Lua that sets the local `into` to what an HMGET of snapshot_fields(codes) answers, for the
    hash `key` and the codes in the Lua expression `codes` (snapshot_codes_arg's string): a script
    then takes one argument for a bulk check's 100 codes instead of 201 fields, which redis-py
    packed one by one. The usage fields are read only for the codes
    the snapshot holds (a check reads no other code's usage; the rest are nil): a bulk check
    mostly names features the plan lacks, and 80 fewer fields cost Redis a fifth of its time."""
    return f"""local {into}_fields = {{'{META_FIELD}'}}
for code in string.gmatch({codes}, '[^\\n]+') do {into}_fields[#{into}_fields + 1] = code end
local {into} = redis.call('HMGET', {key}, unpack({into}_fields))
local {into}_n = #{into} - 1
local {into}_usage, {into}_at = {{}}, {{}}
for i = 2, {into}_n + 1 do
  {into}[{into}_n + i] = false
  if {into}[i] then
    {into}_usage[#{into}_usage + 1] = '{USAGE_FIELD_PREFIX}' .. {into}_fields[i]
    {into}_at[#{into}_at + 1] = {into}_n + i
  end
end
if #{into}_usage > 0 then
  local counters = redis.call('HMGET', {key}, unpack({into}_usage))
  for j = 1, #counters do {into}[{into}_at[j]] = counters[j] end
end
"""


def usage_mirror_write(*, updates: Sequence[UsageMirror]) -> bool:
    """Write the counters into the snapshots that exist, in one script. False: Redis unreachable."""
    if not updates or not redis_configured():
        return True
    cache = caches["default"]  # looked up once: a batch of usage events writes hundreds of keys
    keys = [snapshot_key(update.user_id, cache=cache) for update in updates]
    args: list[Any] = []
    for update in updates:
        args += [usage_field(update.feature), update.value()]
    try:
        # A warm usage event's second command: on this thread's own connection.
        redis_script_run(_USAGE_WRITE, keys=keys, args=args)
    except REDIS_ERRORS:
        entitlement_cache_fallbacks_total.inc()
        return False
    return True


class CacheUnavailable(Exception):
    """Redis could not be reached; the caller answers from the database."""


def _conn() -> Any:
    return get_redis_connection("default")


def snapshot_key(user_id: int, *, cache: Any = None) -> str:
    return str((cache or caches["default"]).make_key(f"ent:s:{user_id}"))


def version_key(user_id: int) -> str:
    return str(caches["default"].make_key(f"ent:v:{user_id}"))


def snapshot_ttl() -> int:
    # The last resort: bounds how long a snapshot can outlive an invalidation that Redis itself
    # confirmed and then lost (a failover to a lagging replica, a restore from an old dump).
    # Invalidations Redis never confirmed are re-applied by the retry job within seconds.
    return int(settings.ENTITLEMENTS_SNAPSHOT_TTL_SECONDS)


def snapshot_read_fields(*, user_id: int, codes: Sequence[str]) -> list[bytes | None]:
    """ONE command: HMGET of snapshot_fields(codes). result[0] is None on a miss."""
    try:
        return list(_conn().hmget(snapshot_key(user_id), snapshot_fields(codes)))
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


def snapshot_write(
    *,
    user_id: int,
    version: str,
    meta: dict[str, Any],
    entries: dict[str, Any],
    usage: dict[str, str] | None = None,
) -> bool:
    """Store the snapshot if no invalidation happened since `version` was read; True if stored."""
    args: list[Any] = [version, snapshot_ttl(), META_FIELD, orjson.dumps(meta)]
    for code, entry in entries.items():
        args += [code, orjson.dumps(entry)]
    for code, value in (usage or {}).items():
        args += [usage_field(code), value]
    try:
        script = redis_script(_WRITE_IF_VERSION)
        return bool(script(keys=[snapshot_key(user_id), version_key(user_id)], args=args, client=_conn()))
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
