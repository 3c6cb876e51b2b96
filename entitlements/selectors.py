"""Reads: a user's effective entitlements (own rows + their family's rows), cached per user."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Subquery

from billing.models import Feature
from entitlements import cache
from entitlements.metrics import (
    entitlement_cache_fallbacks_total,
    entitlement_cache_hits_total,
    entitlement_cache_misses_total,
    entitlement_check_duration_seconds,
    entitlement_checks_allowed,
    entitlement_checks_denied,
)
from entitlements.models import Entitlement
from entitlements.periods import period_bounds
from payments_project.errors import ServiceUnavailable
from subscriptions.models import FamilyMember

_INF = float("inf")
_METERED = ("limit", "metered")

# --- known feature codes: a per-process copy, dropped when a Feature is saved or deleted here
# (receivers.py) and at most ENTITLEMENTS_FEATURE_CODES_TTL_SECONDS old elsewhere. Only used to
# tell `unknown_feature` from `not_in_plan`: it never turns a refusal into a grant.
_codes_lock = threading.Lock()
_codes: dict[str, Any] = {"codes": None, "at": 0.0}


def feature_codes_known() -> frozenset[str]:
    ttl = float(settings.ENTITLEMENTS_FEATURE_CODES_TTL_SECONDS)
    codes = _codes["codes"]
    if codes is not None and time.monotonic() - _codes["at"] < ttl:
        return codes
    fresh = frozenset(Feature.objects.values_list("code", flat=True))
    with _codes_lock:
        _codes["codes"], _codes["at"] = fresh, time.monotonic()
    return fresh


def feature_codes_forget() -> None:
    with _codes_lock:
        _codes["codes"] = None


# --- building a snapshot from the database -------------------------------------------------------


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


_SNAPSHOT_FIELDS = (
    "feature__code",
    "feature__kind",
    "plan__code",
    "source",
    "status",
    "expires_at",
    "limit",
    "family_id",
    "user_id",
    "reset_period",
    "granted_at",
    "subscription__current_period_start",
    "plan__interval",
    "plan__interval_count",
)


def _snapshot_rows(*, user_id: int) -> Any:
    """Own rows UNION ALL the rows of the user's family, live or suspended, in one query.

    Not `user_id = X OR family_id IN (...)`: that defeats both indexes and scans the table.
    """
    statuses = [Entitlement.Status.ACTIVE, Entitlement.Status.SUSPENDED]
    own = Entitlement.objects.filter(user_id=user_id, status__in=statuses)
    family = Entitlement.objects.filter(
        family_id__in=Subquery(FamilyMember.objects.filter(user_id=user_id).values("family_id")),
        status__in=statuses,
    )
    return own.values_list(*_SNAPSHOT_FIELDS).union(family.values_list(*_SNAPSHOT_FIELDS), all=True)


def entitlement_snapshot_build(*, user_id: int) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(meta, entries by feature code) from ONE query.

    An entry is compact JSON for Redis: st = granted/suspended/expired at build time, s = source
    (own/family/one_time), p = plan code, e = expires_at (epoch seconds, compared with now on every
    read), x = expires_at ISO, l = limit, k = feature kind; for metered and limit features also
    h = the quota's holder (u<id> or f<id>), rp = reset period, a = its anchor (epoch), iv/ic = the
    plan's interval and count (entitlements.periods turns them into the current period).
    """
    now = time.time()
    rows = _snapshot_rows(user_id=user_id)
    best: dict[str, tuple[tuple[int, float, float], dict[str, Any]]] = {}
    has_subscription = False
    for row in rows:
        code, kind, plan, source, status, expires_at, limit, family_id = row[:8]
        holder_user, reset_period, granted_at, sub_start, interval, interval_count = row[8:]
        expires = _epoch(expires_at)
        if source == Entitlement.Source.SUBSCRIPTION:
            has_subscription = True
        if status == Entitlement.Status.SUSPENDED:
            state, rank = "suspended", 1
        elif expires is not None and expires <= now:
            state, rank = "expired", 0
        else:
            state, rank = "granted", 2
        # Among grants the one that lasts longest wins (it is valid whenever any is), then the
        # largest limit; None means never/unlimited.
        key = (rank, _INF if expires is None else expires, _INF if limit is None else float(limit))
        if code in best and best[code][0] >= key:
            continue
        source_name = "family" if family_id else ("one_time" if source == "one_time" else "own")
        entry: dict[str, Any] = {
            "st": state,
            "s": source_name,
            "p": plan,
            "e": expires,
            "x": None if expires_at is None else expires_at.isoformat(),
            "l": limit,
            "k": kind,
        }
        if kind in _METERED:
            entry.update(
                h=f"f{family_id}" if family_id else f"u{holder_user}",
                rp=reset_period or "never",
                a=_epoch(sub_start or granted_at),
                iv=interval or "month",
                ic=interval_count or 1,
            )
        best[code] = (key, entry)
    return {"has_subscription": has_subscription}, {code: entry for code, (_, entry) in best.items()}


# --- answering ------------------------------------------------------------------------------------


def check_results(
    codes: Sequence[str],
    entries: Sequence[dict[str, Any] | None],
    meta: dict[str, Any],
    now: float,
    usage: Sequence[Any] | None = None,
) -> list[dict[str, Any]]:
    """One result per code from its snapshot entry (None: not held) and its mirrored usage counter
    (cache.usage_value text, or None); the known codes are read once."""
    known: frozenset[str] | None = None
    results = []
    usage = usage if usage is not None else [None] * len(codes)
    for code, entry, counter in zip(codes, entries, usage, strict=True):
        if entry is not None:
            results.append(check_result(code, entry, now, counter))
            continue
        if known is None:
            known = feature_codes_known()
        if code in known:
            reason = "not_in_plan" if meta.get("has_subscription") else "no_subscription"
        else:
            reason = "unknown_feature"
        results.append(
            {
                "feature": code,
                "allowed": False,
                "reason": reason,
                "source": None,
                "plan": None,
                "expires_at": None,
                "limit": None,
                "used": None,
                "remaining": None,
                "resets_at": None,
            }
        )
    return results


def _period(entry: dict[str, Any], now: float) -> tuple[datetime, datetime | None]:
    anchor = entry.get("a")
    return period_bounds(
        reset_period=entry.get("rp") or "never",
        anchor=None if anchor is None else datetime.fromtimestamp(anchor, UTC),
        interval=entry.get("iv") or "month",
        interval_count=entry.get("ic") or 1,
        at=datetime.fromtimestamp(now, UTC),
    )


def check_result(code: str, entry: dict[str, Any], now: float, counter: Any = None) -> dict[str, Any]:
    """The answer for a feature the user holds (granted, expired, suspended or out of quota).

    Metered and limit features: `used` comes from the usage counter mirrored beside the entry
    (cache.usage_value) when it is of the current period; one of an earlier period means nothing
    was counted in this one yet (counters reset by being keyed by their period start).
    """
    limit = entry["l"]
    metered = entry["k"] in _METERED
    used: int | None = None
    remaining: int | None = None
    resets_at: str | None = None
    if metered:
        start, end = _period(entry, now)
        parsed = cache.usage_parse(counter)
        used = 0
        reserved = 0
        if parsed is not None and abs(parsed[0] - start.timestamp()) < 1e-3:
            used, reserved = parsed[1], parsed[2]
        remaining = None if limit is None else max(limit - used - reserved, 0)
        resets_at = None if end is None else end.isoformat()
    reason = entry["st"]
    expires = entry["e"]
    if reason == "granted" and expires is not None and expires <= now:
        reason = "expired"  # honoured on read even when the snapshot was built before expiry
    if reason == "granted" and metered and limit is not None and remaining is not None and remaining <= 0:
        reason = "quota_exhausted"
    return {
        "feature": code,
        "allowed": reason == "granted",
        "reason": reason,
        "source": entry["s"],
        "plan": entry["p"],
        "expires_at": entry["x"],
        "limit": limit,
        "used": used,
        "remaining": remaining,
        "resets_at": resets_at,
    }


def snapshot_usage(*, user_id: int, entries: dict[str, dict[str, Any]], now: float) -> dict[str, str]:
    """The usage fields of a snapshot (cache.usage_value text by feature), read from PostgreSQL by
    the usage app's provider; none when the usage app is not installed."""
    provider = cache.usage_provider.get("counters")
    if provider is None:
        return {}
    wanted = []
    for code, entry in entries.items():
        if "h" in entry:
            start, _ = _period(entry, now)
            wanted.append((code, entry["h"], start.timestamp()))
    counters = provider(user_id=user_id, wanted=wanted)
    return {code: cache.usage_value(*values) for code, values in counters.items()}


def _build_and_store(
    *, user_id: int, use_cache: bool
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, str]]:
    """Rebuild from the database (entries, then the usage counters); store in Redis unless an
    invalidation raced us."""
    version = None
    if use_cache:
        try:
            version = cache.snapshot_version(user_id=user_id)  # read BEFORE the database
        except cache.CacheUnavailable:
            entitlement_cache_fallbacks_total.inc()
    try:
        meta, entries = entitlement_snapshot_build(user_id=user_id)
        usage = snapshot_usage(user_id=user_id, entries=entries, now=time.time())
    except DatabaseError as exc:
        raise ServiceUnavailable("Entitlements cannot be checked right now.") from exc
    if version is not None:
        try:
            cache.snapshot_write(user_id=user_id, version=version, meta=meta, entries=entries, usage=usage)
        except cache.CacheUnavailable:
            entitlement_cache_fallbacks_total.inc()
    return meta, entries, usage


def entitlement_check(*, user_id: int, features: Sequence[str]) -> list[dict[str, Any]]:
    """One result per code, in order. Warm: ONE Redis command. Cold: one query (+ the known codes)."""
    start = time.perf_counter()
    codes = list(features)
    raw: list[bytes | None] | None = None
    try:
        raw = cache.snapshot_read_fields(user_id=user_id, codes=codes)
    except cache.CacheUnavailable:
        entitlement_cache_fallbacks_total.inc()
    return entitlement_check_answer(user_id=user_id, codes=codes, raw=raw, start=start)


def entitlement_check_answer(
    *, user_id: int, codes: Sequence[str], raw: Sequence[bytes | None] | None, start: float
) -> list[dict[str, Any]]:
    """entitlement_check on the snapshot fields already read, counted in the check metrics.

    `raw`: the HMGET of cache.snapshot_fields(codes): the meta field, each code, each code's usage
    (the hot path's script leaves nil the usage of codes not held, which is never read; raw[0]
    None: no snapshot, rebuilt from the database and stored), or None when Redis could not be read
    (answered from the database, nothing stored). `start`: perf_counter() when answering began.
    The entitlement hot path reads `raw` in its own script (with the token and the rate limit) and
    answers with this too.
    """
    now = time.time()
    if raw is not None and raw[0] is not None:
        entitlement_cache_hits_total.inc()
        meta = orjson.loads(raw[0])
        count = len(codes)
        reserved = cache.RESERVED_PREFIX
        found = [
            None if value is None or code.startswith(reserved) else orjson.loads(value)
            for code, value in zip(codes, raw[1 : count + 1], strict=True)
        ]
        counters: list[Any] = list(raw[count + 1 : 2 * count + 1])
    else:
        if raw is not None:
            entitlement_cache_misses_total.inc()
        meta, entries, usage = _build_and_store(user_id=user_id, use_cache=raw is not None)
        found = [entries.get(code) for code in codes]
        counters = [usage.get(code) for code in codes]
    results = check_results(codes, found, meta, now, counters)
    allowed = sum(1 for result in results if result["allowed"])
    if allowed:
        entitlement_checks_allowed.inc(allowed)
    if len(results) - allowed:
        entitlement_checks_denied.inc(len(results) - allowed)
    entitlement_check_duration_seconds.observe(time.perf_counter() - start)
    return results


def entitlement_list(*, user_id: int) -> list[dict[str, Any]]:
    """The features the user may use now, with their source; sorted by feature code."""
    entries: dict[str, dict[str, Any]] | None = None
    use_cache = True
    try:
        raw = cache.snapshot_read_all(user_id=user_id)
    except cache.CacheUnavailable:
        use_cache = False
        entitlement_cache_fallbacks_total.inc()
        raw = {}
    if raw:
        entitlement_cache_hits_total.inc()
        raw.pop(cache.META_FIELD.encode())  # only needed to explain features not held
        prefix = cache.USAGE_FIELD_PREFIX.encode()
        usage = {
            key[len(prefix) :].decode(): value.decode()
            for key, value in raw.items()
            if key.startswith(prefix)
        }
        entries = {
            key.decode(): orjson.loads(value) for key, value in raw.items() if not key.startswith(prefix)
        }
    else:
        if use_cache:
            entitlement_cache_misses_total.inc()
        _, entries, usage = _build_and_store(user_id=user_id, use_cache=use_cache)
    now = time.time()
    results = [check_result(code, entries[code], now, usage.get(code)) for code in sorted(entries)]
    return [result for result in results if result["allowed"]]
