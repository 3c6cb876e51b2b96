"""Reads: a user's effective entitlements (own rows + their family's rows), cached per user."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import datetime
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
from payments_project.errors import ServiceUnavailable
from subscriptions.models import FamilyMember

_INF = float("inf")

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
    read), x = expires_at ISO, l = limit, k = feature kind.
    """
    now = time.time()
    rows = _snapshot_rows(user_id=user_id)
    best: dict[str, tuple[tuple[int, float, float], dict[str, Any]]] = {}
    has_subscription = False
    for code, kind, plan, source, status, expires_at, limit, family_id in rows:
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
        best[code] = (
            key,
            {
                "st": state,
                "s": source_name,
                "p": plan,
                "e": expires,
                "x": None if expires_at is None else expires_at.isoformat(),
                "l": limit,
                "k": kind,
            },
        )
    return {"has_subscription": has_subscription}, {code: entry for code, (_, entry) in best.items()}


# --- answering ------------------------------------------------------------------------------------


def check_results(
    codes: Sequence[str], entries: Sequence[dict[str, Any] | None], meta: dict[str, Any], now: float
) -> list[dict[str, Any]]:
    """One result per code from its snapshot entry (None: not held); the known codes are read once."""
    known: frozenset[str] | None = None
    results = []
    for code, entry in zip(codes, entries, strict=True):
        if entry is not None:
            results.append(check_result(code, entry, now))
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
            }
        )
    return results


def check_result(code: str, entry: dict[str, Any], now: float) -> dict[str, Any]:
    """The answer for a feature the user holds (granted, expired, suspended or out of quota)."""
    limit = entry["l"]
    metered = entry["k"] in ("limit", "metered")
    # Usage tracking does not exist yet: nothing is counted, so used is 0 and remaining is the
    # whole limit. When the usage app lands, `used` comes from its counters.
    used = 0 if metered else None
    remaining = (None if limit is None else max(limit - 0, 0)) if metered else None
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
    }


def _build_and_store(*, user_id: int, use_cache: bool) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Rebuild from the database; store in Redis unless an invalidation raced us."""
    version = None
    if use_cache:
        try:
            version = cache.snapshot_version(user_id=user_id)  # read BEFORE the database
        except cache.CacheUnavailable:
            entitlement_cache_fallbacks_total.inc()
    try:
        meta, entries = entitlement_snapshot_build(user_id=user_id)
    except DatabaseError as exc:
        raise ServiceUnavailable("Entitlements cannot be checked right now.") from exc
    if version is not None:
        try:
            cache.snapshot_write(user_id=user_id, version=version, meta=meta, entries=entries)
        except cache.CacheUnavailable:
            entitlement_cache_fallbacks_total.inc()
    return meta, entries


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

    `raw`: the HMGET of the meta field then each code (raw[0] None: no snapshot, rebuilt from the
    database and stored), or None when Redis could not be read (answered from the database, nothing
    stored). `start`: perf_counter() when answering began. The entitlement hot path reads `raw` in
    its own script (with the token and the rate limit) and answers with this too.
    """
    now = time.time()
    if raw is not None and raw[0] is not None:
        entitlement_cache_hits_total.inc()
        meta = orjson.loads(raw[0])
        found = [None if value is None else orjson.loads(value) for value in raw[1:]]
    else:
        if raw is not None:
            entitlement_cache_misses_total.inc()
        meta, entries = _build_and_store(user_id=user_id, use_cache=raw is not None)
        found = [entries.get(code) for code in codes]
    results = check_results(codes, found, meta, now)
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
        entries = {key.decode(): orjson.loads(value) for key, value in raw.items()}
    else:
        if use_cache:
            entitlement_cache_misses_total.inc()
        _, entries = _build_and_store(user_id=user_id, use_cache=use_cache)
    now = time.time()
    results = [check_result(code, entries[code], now) for code in sorted(entries)]
    return [result for result in results if result["allowed"]]
