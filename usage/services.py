"""Writes of the usage app: record events (one or a batch), reserve, settle, release, adjust.

A batch of any size is a fixed handful of statements, whatever the number of events:

1. INSERT the records ... ON CONFLICT (user, feature, idempotency key) DO NOTHING RETURNING id, in
   one sorted key order: those not returned are duplicates, looked up in one SELECT to tell a
   replay from a reused key;
2. ONE upsert over the counters the new records draw on, in key order (one order for every
   writer: no deadlock): a missing counter is created, and each counter takes the batch's total
   for it where `used + reserved + total` fits the allowance (INSERT ... ON CONFLICT DO UPDATE ...
   WHERE ... RETURNING: check and increment in one atomic statement). Every counter it names is
   locked by it, counted or not;
3. only for the counters whose total did not fit (a quota running out): SELECT their values
   (already locked), accept each event in order while `used + reserved + n` stays within the
   allowance, DELETE the refused records (one statement) and add the accepted sums in ONE
   conditional UPDATE `WHERE used + reserved + n <= allowance` (the lock makes it succeed; the
   condition makes an overrun impossible even if it did not);
4. thresholds crossed are INSERTed ... ON CONFLICT DO NOTHING RETURNING, and the returned ones
   become domain events in the outbox.

A single event on PostgreSQL is ONE statement in the common case (_FAST_SQL, autocommit): on a
counter of the period that the event fits without crossing a threshold, against a quota whose
rows this process has read (usage.selectors.quota_remembered) and the statement proves unchanged.
Anything else (the period's first event, a threshold, a refusal, a duplicate, a changed quota, a
race lost) is a batch of one, as above. Redis is told after commit the values the statements
returned (usage.mirror): it only mirrors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
from django.conf import settings
from django.db import DataError, connection, transaction
from django.db.models import F
from django.utils import timezone

from billing.metering.services import meter_report_record, meter_window
from entitlements.periods import EPOCH
from payments_project.accounts.services import audit_record
from payments_project.db import prepared_cursor
from payments_project.errors import Conflict, DomainError, NotFound
from usage import mirror
from usage.events import Crossing, thresholds_record
from usage.models import (
    UsageAdjustment,
    UsageCounter,
    UsageMeterCursor,
    UsageRecord,
    UsageReservation,
)
from usage.selectors import (
    METER_SETTLE,
    QUOTA_FINGERPRINT_SQL,
    Quota,
    aware_utc,
    quota_forget,
    quota_one_resolve,
    quota_remembered,
    quotas_resolve,
    usage_metered_totals,
)

logger = logging.getLogger(__name__)

MAX_BATCH = 1000
RESERVATION_KEY_PREFIX = "\x1freservation:"
MAX_QUANTITY = 10**12
# Far below METER_SETTLE (usage.selectors): a record committed within it of its stamp is never
# missed by the meter windows.
RESTAMP_AFTER = timedelta(seconds=10)


@dataclass(slots=True)  # a batch makes a thousand: slots are quicker to make and read
class UsageEvent:
    """One event as a client sent it (already bounded by the API's serializer)."""

    user_id: int
    feature: str
    idempotency_key: str
    quantity: int = 1
    resource_type: str = ""
    resource_size: int = 0
    operation: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None

    def fingerprint(self) -> str:
        body = [
            self.feature,
            self.quantity,
            self.resource_type,
            self.resource_size,
            self.operation,
            self.metadata,
            None if self.occurred_at is None else self.occurred_at.isoformat(),
        ]
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(slots=True)  # a batch makes a thousand: slots are quicker to make and read
class EventResult:
    status: str  # recorded, duplicate, refused
    code: str | None = None
    message: str = ""
    record_id: int | None = None
    quantity: int | None = None
    over_limit: bool = False
    period_start: datetime | None = None
    limit: int | None = None
    used: int | None = None
    remaining: int | None = None
    resets_at: datetime | None = None


class QuotaExceeded(DomainError):
    status_code = 429
    code = "quota_exceeded"


REFUSAL_MESSAGES = {
    "unknown_feature": "No feature has this code.",
    "not_metered": "This feature is on/off: it has no usage to record.",
    "not_entitled": "The user holds no live entitlement to this feature.",
    "occurred_at_in_future": "occurred_at is in the future.",
    "occurred_at_too_old": "occurred_at is before the open period (minus the grace window).",
    "occurred_at_before_entitlement": "occurred_at is before the user was entitled to this feature.",
    "quota_exceeded": "The quota for this period is used up.",
    "idempotency_key_reused": "This idempotency key was used with another body.",
}


def _shown_start(period: tuple[datetime, datetime | None]) -> datetime | None:
    """A period's start as answers show it: none for a limit that never resets (whose counter is
    keyed by the epoch), as the usage summary and entitlement checks say it."""
    return None if period[1] is None else period[0]


def _refused(code: str, **extra: Any) -> EventResult:
    return EventResult(status="refused", code=code, message=REFUSAL_MESSAGES[code], **extra)


def _dt(value: Any) -> datetime:
    """A datetime read back from raw SQL, aware in UTC (see usage.selectors.aware_utc)."""
    parsed = aware_utc(value)
    assert parsed is not None
    return parsed


def _db_dt(value: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def _remaining(limit: int | None, used: int, reserved: int) -> int | None:
    return None if limit is None else max(limit - used - reserved, 0)


@dataclass(slots=True)  # a batch makes a thousand: slots are quicker to make and read
class _Pending:
    index: int
    event: UsageEvent
    quota: Quota
    period: tuple[datetime, datetime | None]
    occurred_at: datetime
    fingerprint: str
    # Set when the key was recorded before this batch: that record's body fingerprint and the
    # answer a body matching it gets (a replay). Later copies of the key in the batch are judged
    # against it, as they would be sent alone, not against this copy.
    stored: tuple[str, EventResult] | None = None


def usage_events_record(*, events: Sequence[UsageEvent], now: datetime | None = None) -> list[EventResult]:
    """Record up to MAX_BATCH events; one result per event, in order. Each is recorded, a duplicate
    (replaying the first answer) or refused with a code; a refusal never loses the others."""
    if len(events) > MAX_BATCH:
        raise DomainError(f"At most {MAX_BATCH} events per batch.", code="batch_too_large")
    started = time.monotonic()
    now = now or timezone.now()
    results: list[EventResult | None] = [None] * len(events)
    fingerprint: str | None = None  # of the quota rows of a single event on PostgreSQL
    if len(events) == 1 and connection.vendor == "postgresql":
        event = events[0]
        remembered = quota_remembered(user_id=event.user_id, code=event.feature, at=now)
        if remembered is not None:
            result = _record_remembered(event, *remembered, now, started=started)
            if result is not None:
                return [result]
        quota, fingerprint = quota_one_resolve(user_id=event.user_id, code=event.feature, at=now)
        if remembered is not None:
            fingerprint = None  # the one statement did not take it: the full path decides
        quotas: dict[tuple[int, str], Quota | str] = {(event.user_id, event.feature): quota}
    else:
        quotas = quotas_resolve(pairs={(e.user_id, e.feature) for e in events}, at=now)
    pending: list[_Pending] = []
    first_of: dict[tuple[int, str, str], _Pending] = {}
    in_batch_dupes: list[tuple[int, _Pending, str]] = []
    limits = _time_limits()
    # A batch draws on a few quotas at one or a few instants, and its users' quotas mostly share
    # a reset rule and anchor (subscriptions started together, a family's members): each period
    # is computed once per rule, looked up once per quota.
    periods: dict[tuple[int, datetime], tuple[datetime, datetime | None]] = {}
    by_rule: dict[tuple[Any, ...], tuple[datetime, datetime | None]] = {}

    def period_of(quota: Quota, at: datetime) -> tuple[datetime, datetime | None]:
        key = (id(quota), at)
        bounds = periods.get(key)
        if bounds is None:
            rule = (quota.reset_period, quota.anchor, quota.interval, quota.interval_count, at)
            bounds = by_rule.get(rule)
            if bounds is None:
                bounds = by_rule[rule] = quota.period(at)
            periods[key] = bounds
        return bounds

    for index, event in enumerate(events):
        quota = quotas[(event.user_id, event.feature)]
        if isinstance(quota, str):
            results[index] = _refused(quota)
            continue
        item_or_refusal = _pending(index, event, quota, now, period_of, limits)
        if isinstance(item_or_refusal, EventResult):
            results[index] = item_or_refusal
            continue
        item = item_or_refusal
        key = (event.user_id, event.feature, event.idempotency_key)
        if key in first_of:
            in_batch_dupes.append((index, first_of[key], item.fingerprint))
            continue
        first_of[key] = item
        pending.append(item)
    if pending:
        fast = None
        if fingerprint is not None and len(pending) == 1:
            fast = _record_one_fast(pending[0], now, started=started, fingerprint=fingerprint)
        if fast is not None:
            results[pending[0].index] = fast
        else:
            with transaction.atomic():
                _record_pending(pending, results, now, started=started)
    for index, first, fingerprint in in_batch_dupes:
        answer = results[first.index]
        assert answer is not None
        if first.stored is not None:
            stored_fingerprint, replay = first.stored
            results[index] = (
                replay if fingerprint == stored_fingerprint else _refused("idempotency_key_reused")
            )
        elif fingerprint != first.fingerprint:
            results[index] = _refused("idempotency_key_reused")
        elif answer.status == "refused":
            results[index] = answer
        else:
            results[index] = dataclasses.replace(answer, status="duplicate")
    return [result for result in results if result is not None]


def _pending(
    index: int,
    event: UsageEvent,
    quota: Quota,
    now: datetime,
    period_of: Callable[[Quota, datetime], tuple[datetime, datetime | None]],
    limits: tuple[timedelta, timedelta],
) -> _Pending | EventResult:
    """The event to record against `quota`, or its refusal by time: in the future beyond the skew,
    before the open period minus the grace window, or before the entitlement began (`limits`:
    _time_limits())."""
    skew, grace = limits
    occurred_at = event.occurred_at or now
    if occurred_at > now + skew:
        return _refused("occurred_at_in_future")
    open_period = period_of(quota, now)
    if occurred_at < open_period[0] - grace:
        return _refused("occurred_at_too_old")
    if quota.granted_at is not None and occurred_at < quota.granted_at:
        return _refused("occurred_at_before_entitlement")
    period = open_period if occurred_at is now else period_of(quota, occurred_at)
    return _Pending(index, event, quota, period, occurred_at, event.fingerprint())


def _time_limits() -> tuple[timedelta, timedelta]:
    """(clock skew, late grace) an event's occurred_at must fall within."""
    return (
        timedelta(seconds=settings.USAGE_CLOCK_SKEW_SECONDS),
        timedelta(seconds=settings.USAGE_LATE_GRACE_SECONDS),
    )


def _record_remembered(
    event: UsageEvent, quota: Quota, fingerprint: str, now: datetime, *, started: float
) -> EventResult | None:
    """A single event recorded in ONE statement against the quota this process remembers
    (usage.selectors.quota_remembered), or None: the caller reads the quota and decides. The
    statement proves the quota still the database's; a quota it does not take is forgotten (read
    again by the caller)."""
    item = _pending(0, event, quota, now, lambda q, at: q.period(at), _time_limits())
    if isinstance(item, EventResult):
        return None  # a refusal is the full path's to give, from the database's quota
    result = _record_one_fast(item, now, started=started, fingerprint=fingerprint)
    if result is None:
        quota_forget(user_id=event.user_id, code=event.feature)
    return result


def _counter_keys(pending: Sequence[_Pending]) -> dict[tuple[str, str, datetime], _Pending]:
    keys: dict[tuple[str, str, datetime], _Pending] = {}
    for item in pending:
        keys.setdefault((item.quota.subject, item.event.feature, item.period[0]), item)
    return dict(sorted(keys.items()))


def _keys_values(keys: Iterable[tuple[str, str, datetime]]) -> tuple[str, list[Any]]:
    """A VALUES list of counter keys (subject, feature, period start) and its parameters."""
    params: list[Any] = []
    for subject, code, start in keys:
        params += [subject, code, _db_dt(start)]
    return ", ".join(["(%s, %s, %s)"] * (len(params) // 3)), params


def _counters_lock(
    keys: dict[tuple[str, str, datetime], _Pending], now: datetime
) -> dict[tuple[str, str, datetime], list[int]]:
    """Create the missing counters and lock them all, in id order: {key: [id, used, reserved]}."""
    table = UsageCounter._meta.db_table
    rows: list[Any] = []
    for (subject, code, start), item in keys.items():
        end = item.period[1]
        rows += [
            subject,
            item.quota.user_id if item.quota.family_id is None else None,
            item.quota.family_id,
            code,
            _db_dt(start),
            None if end is None else _db_dt(end),
            item.quota.limit,
            _db_dt(now),
        ]
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, 0, 0, 0, %s)"] * len(keys))
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    wanted, wanted_params = _keys_values(keys)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (subject, user_id, family_id, feature_code, period_start, period_end, "  # noqa: S608 - table names from the models, values as parameters
            f'"limit", used, reserved, seq, updated_at) VALUES {values} '
            "ON CONFLICT (subject, feature_code, period_start) DO NOTHING",
            rows,
        )
        cursor.execute(
            f"SELECT id, subject, feature_code, period_start, used, reserved FROM {table} "  # noqa: S608 - table names from the models, values as parameters
            f"WHERE (subject, feature_code, period_start) IN (VALUES {wanted}) ORDER BY id{lock}",
            wanted_params,
        )
        found = cursor.fetchall()
    return {
        (subject, code, _dt(start)): [pk, used, reserved]
        for pk, subject, code, start, used, reserved in found
    }


_RECORD_COLUMNS = (
    "user_id, family_id, subject, feature_code, quantity, resource_type, resource_size, operation, "
    "idempotency_key, fingerprint, metadata, occurred_at, recorded_at, period_start, over_limit"
)
_RECORD_SHAPE = (
    "u bigint, f bigint, s text, c text, q bigint, rt text, rs bigint, op text, k text, fp text, "
    "m jsonb, o timestamptz, p timestamptz"
)


def _key_order(item: _Pending) -> tuple[int, str, str]:
    return (item.event.user_id, item.event.feature, item.event.idempotency_key)


def _records_insert(pending: Sequence[_Pending], now: datetime) -> dict[tuple[int, str, str], int]:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING: {(user, feature, key): id} of the new rows.

    On PostgreSQL the rows travel as ONE JSON parameter that the server unpacks
    (json_to_recordset): orjson writes 1,000 rows in well under a millisecond, where binding 14
    values per row (or 13 arrays) costs psycopg a Python call per value.
    """
    table = UsageRecord._meta.db_table
    returning = (
        "ON CONFLICT (user_id, feature_code, idempotency_key) DO NOTHING "
        "RETURNING id, user_id, feature_code, idempotency_key"
    )
    if connection.vendor == "postgresql":
        rows = orjson.dumps(
            [
                {
                    "u": item.event.user_id,
                    "f": item.quota.family_id,
                    "s": item.quota.subject,
                    "c": item.event.feature,
                    "q": item.event.quantity,
                    "rt": item.event.resource_type,
                    "rs": item.event.resource_size,
                    "op": item.event.operation,
                    "k": item.event.idempotency_key,
                    "fp": item.fingerprint,
                    "m": item.event.metadata,
                    "o": item.occurred_at,
                    "p": item.period[0],
                }
                # One order of keys for every writer: concurrent inserts of the same keys wait
                # for each other instead of deadlocking.
                for item in sorted(pending, key=_key_order)
            ]
        ).decode()
        sql = (
            f"INSERT INTO {table} ({_RECORD_COLUMNS}) "  # noqa: S608 - table names from the models, values as parameters
            "SELECT u, f, s, c, q, rt, rs, op, k, fp, m, o, %s, p, false "
            f"FROM json_to_recordset(%s::json) AS t({_RECORD_SHAPE}) {returning}"
        )
        with prepared_cursor() as cursor:
            cursor.execute(sql, [now, rows])
            return {(user_id, code, key): pk for pk, user_id, code, key in cursor.fetchall()}
    params: list[Any] = []
    recorded_at = _db_dt(now)
    for item in pending:
        event = item.event
        params += [
            event.user_id,
            item.quota.family_id,
            item.quota.subject,
            event.feature,
            event.quantity,
            event.resource_type,
            event.resource_size,
            event.operation,
            event.idempotency_key,
            item.fingerprint,
            connection.ops.adapt_json_value(event.metadata, None),
            _db_dt(item.occurred_at),
            recorded_at,
            _db_dt(item.period[0]),
        ]
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, false)"] * len(pending))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({_RECORD_COLUMNS}) VALUES {values} {returning}",  # noqa: S608 - table names from the models, values as parameters
            params,
        )
        return {(user_id, code, key): pk for pk, user_id, code, key in cursor.fetchall()}


# One event on an existing counter, in ONE statement that commits by itself (autocommit): the
# record is inserted and its counter counted only where the quota's rows are still those the caller
# resolved the quota from (their fingerprint) and the counter's committed values say the event
# fits, crosses no threshold and keeps the record's over-limit flag; `ok` reads them, `up` checks
# the same on the row it locks. The record goes in first (its key before its counter, the batch's
# order: no deadlock). Where `ok` says no, nothing is written and no row comes back. Where `up`
# disagrees with `ok` (another writer moved the counter in between), or waited for the counter's
# lock past RESTAMP_AFTER (the record's stamp would be stale: see _record_pending), `1 / 0` aborts
# the statement, which undoes the insert: SQL has no other way to refuse half of a statement.
_FAST_SQL = (  # noqa: S608 - table names from the models, values as parameters
    "WITH ok AS ("
    "SELECT id, used FROM {counter} WHERE subject = %(s)s AND feature_code = %(c)s AND period_start = %(p)s "
    "AND {fits} AND {quota} = %(qfp)s), "
    "ins AS (INSERT INTO {record} ({columns}) "
    "SELECT %(u)s, %(f)s, %(s)s, %(c)s, %(n)s, %(rt)s, %(rs)s, %(op)s, %(k)s, %(fp)s, %(m)s::jsonb, %(o)s, "
    "%(r)s, %(p)s, %(l)s::bigint IS NOT NULL AND ok.used + %(n)s > %(l)s FROM ok "
    "ON CONFLICT (user_id, feature_code, idempotency_key) DO NOTHING RETURNING id, over_limit), "
    'up AS (UPDATE {counter} SET used = used + %(n)s, "limit" = %(l)s, allowance = %(a)s, seq = seq + 1, '
    "updated_at = %(r)s FROM ins WHERE {counter}.id = (SELECT id FROM ok) AND {fits} "
    "AND (%(l)s::bigint IS NULL OR (used + %(n)s > %(l)s) = ins.over_limit) "
    "RETURNING {counter}.used, {counter}.reserved, {counter}.seq) "
    "SELECT ins.id, ins.over_limit, up.used, up.reserved, up.seq, 1 / CASE WHEN clock_timestamp() "
    "- statement_timestamp() < %(late)s THEN (SELECT count(*) FROM up) ELSE 0 END "
    "FROM ins LEFT JOIN up ON true"
).format(
    counter=UsageCounter._meta.db_table,
    record=UsageRecord._meta.db_table,
    columns=_RECORD_COLUMNS,
    quota=QUOTA_FINGERPRINT_SQL,
    # Fits the allowance, and crosses no threshold (thresholds_record's levels, with w the first
    # value at 80%): stays below 80%, stays between 80% and the limit, or was already past it.
    fits=(
        "(%(a)s::bigint IS NULL OR used + reserved + %(n)s <= %(a)s) AND (%(l)s::bigint IS NULL "
        "OR used + %(n)s < %(w)s OR (used >= %(w)s AND used + %(n)s < %(l)s) OR used > %(l)s)"
    ),
)


def _record_one_fast(
    item: _Pending, now: datetime, *, started: float, fingerprint: str
) -> EventResult | None:
    """The common single event in one round trip (_FAST_SQL), or None: the batch's path decides
    (a new counter or period, a threshold crossed, a refusal, a duplicate, a race lost, a quota
    whose rows no longer have `fingerprint`). PostgreSQL only (the fingerprint is its md5)."""
    quota, event = item.quota, item.event
    limit = quota.limit
    params = {
        "u": event.user_id,
        "f": quota.family_id,
        "s": quota.subject,
        "c": event.feature,
        "n": event.quantity,
        "rt": event.resource_type,
        "rs": event.resource_size,
        "op": event.operation,
        "k": event.idempotency_key,
        "fp": item.fingerprint,
        "m": orjson.dumps(event.metadata).decode(),
        "o": item.occurred_at,
        "r": now + timedelta(seconds=time.monotonic() - started),
        "p": item.period[0],
        "l": limit,
        "a": quota.allowance,
        "w": None if limit is None else -(-80 * limit // 100),
        "qfp": fingerprint,
        "late": RESTAMP_AFTER,
    }
    try:
        # Inside a caller's transaction the abort must stay in a savepoint.
        savepoint = transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()
        with savepoint, prepared_cursor() as cursor:
            cursor.execute(_FAST_SQL, params)
            row = cursor.fetchone()
    except DataError as exc:
        if not isinstance(exc.__cause__, psycopg.errors.DivisionByZero):
            raise
        return None  # the statement's own refusal: a race lost or a long wait, nothing written
    if row is None:
        return None
    record_id, over, used, reserved, seq, _ = row
    values = mirror.CounterValues(
        user_id=quota.user_id if quota.family_id is None else None,
        family_id=quota.family_id,
        feature=event.feature,
        period_start=item.period[0],
        used=used,
        reserved=reserved,
        seq=seq,
    )
    transaction.on_commit(lambda: mirror.counters_mirror_values(counters=[values]))
    return EventResult(
        status="recorded",
        record_id=record_id,
        quantity=event.quantity,
        over_limit=over,
        period_start=_shown_start(item.period),
        limit=limit,
        used=used,
        remaining=_remaining(limit, used, reserved),
        resets_at=item.period[1],
    )


def _counters_upsert(
    keys: dict[tuple[str, str, datetime], _Pending],
    totals: dict[tuple[str, str, datetime], int],
    now: datetime,
) -> tuple[dict[tuple[str, str, datetime], list[int]], set[tuple[str, str, datetime]]]:
    """ONE statement over every counter the batch touches, in key order: a missing counter is
    created, and each counter takes its batch total `n` at once where `used + reserved + n` fits
    its allowance (INSERT ... ON CONFLICT DO UPDATE ... WHERE: the check and the increment are
    one atomic statement). Returns ({key: [id, used, reserved, seq]} of the counters counted,
    the keys left to decide event by event).

    Every row the statement considers is locked by it, counted or not, so the caller decides the
    others under those locks; and every writer of several counters takes them here in one order
    (reservations and corrections take one counter): no deadlock. A total that cannot fit even an
    empty counter is proposed as 0 so the row is created (and locked) but never counted.
    """
    table = UsageCounter._meta.db_table
    proposed: dict[tuple[str, str, datetime], int] = {}
    rows: list[dict[str, Any]] = []
    for key, item in keys.items():
        total = totals.get(key, 0)
        allowance = item.quota.allowance
        proposed[key] = n = total if allowance is None or total <= allowance else 0
        rows.append(
            {
                "s": key[0],
                "u": item.quota.user_id if item.quota.family_id is None else None,
                "f": item.quota.family_id,
                "c": key[1],
                "p": key[2],
                "e": item.period[1],
                "l": item.quota.limit,
                "a": allowance,
                "n": n,
            }
        )
    columns = (
        'subject, user_id, family_id, feature_code, period_start, period_end, "limit", allowance, used, '
        "reserved, seq, updated_at"
    )
    upsert = (
        "ON CONFLICT (subject, feature_code, period_start) DO UPDATE SET used = c.used + excluded.used, "
        '"limit" = excluded."limit", allowance = excluded.allowance, seq = c.seq + 1, '
        "updated_at = excluded.updated_at "
        "WHERE excluded.used > 0 AND "
        "(excluded.allowance IS NULL OR c.used + c.reserved + excluded.used <= excluded.allowance) "
        "RETURNING id, subject, feature_code, period_start, used, reserved, seq"
    )
    if connection.vendor == "postgresql":
        source = (
            "SELECT s, u, f, c, p, e, l, a, n, 0, CASE WHEN n > 0 THEN 1 ELSE 0 END, %s FROM "
            "json_to_recordset(%s::json) AS t(s text, u bigint, f bigint, c text, p timestamptz, "
            "e timestamptz, l bigint, a bigint, n bigint) ORDER BY s, c, p"
        )
        params: list[Any] = [now, orjson.dumps(rows).decode()]
    else:
        # SQLite (`make run`): the same statement over a VALUES list ("WHERE true": SQLite's
        # grammar needs it before an upsert clause).
        values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
        source = (
            "SELECT column1, column2, column3, column4, column5, column6, column7, column8, column9, 0, "  # noqa: S608 - placeholders only
            f"CASE WHEN column9 > 0 THEN 1 ELSE 0 END, %s FROM (VALUES {values}) WHERE true "
            "ORDER BY column1, column4, column5"
        )
        params = [_db_dt(now)]
        for row in rows:
            params += [
                row["s"],
                row["u"],
                row["f"],
                row["c"],
                _db_dt(row["p"]),
                None if row["e"] is None else _db_dt(row["e"]),
                row["l"],
                row["a"],
                row["n"],
            ]
    with prepared_cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} AS c ({columns}) {source} {upsert}", params)
        returned = cursor.fetchall()
    counted: dict[tuple[str, str, datetime], list[int]] = {}
    for pk, subject, code, start, used, reserved, seq in returned:
        key = (subject, code, _dt(start))
        if proposed.get(key):
            counted[key] = [pk, used, reserved, seq]
    return counted, set(keys) - set(counted)


def _counters_read(keys: Sequence[tuple[str, str, datetime]]) -> dict[tuple[str, str, datetime], list[int]]:
    """{key: [id, used, reserved, seq]} of counters this transaction already holds locked."""
    table = UsageCounter._meta.db_table
    wanted, params = _keys_values(keys)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, subject, feature_code, period_start, used, reserved, seq FROM {table} "  # noqa: S608 - table names from the models, values as parameters
            f"WHERE (subject, feature_code, period_start) IN (VALUES {wanted})",
            params,
        )
        found = cursor.fetchall()
    return {
        (subject, code, _dt(start)): [pk, used, reserved, seq]
        for pk, subject, code, start, used, reserved, seq in found
    }


def _record_pending(
    pending: list[_Pending], results: list[EventResult | None], now: datetime, *, started: float
) -> None:
    # The records go in BEFORE the counters are locked, so that concurrent batches on the same
    # counters (one customer's events, a service sending batches in parallel) hold those locks only
    # for the short decide-and-count part, not for the insert. Inserts take their keys in one order
    # (sorted in _records_insert) and never wait for a counter, and counters are locked in one
    # order (_counters_upsert) by writers that no longer wait for a key: no deadlock.
    # recorded_at is when the records went in, measured from `now` (a given `now` stays the
    # clock). The meter windows (usage_meter_windows_report) go by it and read a window only
    # METER_SETTLE after it closes, so a record must commit soon after its stamp: if the counters'
    # locks kept it waiting longer than RESTAMP_AFTER, it is stamped again once they are held.
    recorded_at = now + timedelta(seconds=time.monotonic() - started)
    inserted = _records_insert(pending, recorded_at)
    duplicates: list[_Pending] = []
    new: list[tuple[_Pending, int, tuple[str, str, datetime]]] = []
    totals: dict[tuple[str, str, datetime], int] = defaultdict(int)
    for item in pending:
        pk = inserted.get((item.event.user_id, item.event.feature, item.event.idempotency_key))
        if pk is None:
            duplicates.append(item)
            continue
        counter_key = (item.quota.subject, item.event.feature, item.period[0])
        new.append((item, pk, counter_key))
        totals[counter_key] += item.event.quantity
    if duplicates:
        _answer_duplicates(duplicates, results, now)
    if not new:
        return
    keys = _counter_keys([item for item, _, _ in new])
    counted, undecided = _counters_upsert(keys, totals, now)
    waited = now + timedelta(seconds=time.monotonic() - started)
    if waited - recorded_at > RESTAMP_AFTER:
        UsageRecord.objects.filter(pk__in=inserted.values()).update(recorded_at=waited)
    # Used before this batch, per counter; then the running value as each event is answered.
    state: dict[tuple[str, str, datetime], list[int]] = {
        key: [values[0], values[1] - totals[key], values[2], values[3]] for key, values in counted.items()
    }
    if undecided:
        state.update(_counters_read(sorted(undecided)))
    before = {key: values[1] for key, values in state.items()}
    refused_ids: list[int] = []
    over_ids: list[int] = []
    added: dict[tuple[str, str, datetime], int] = defaultdict(int)
    for item, pk, counter_key in new:
        values = state[counter_key]
        used, reserved = values[1], values[2]
        quantity = item.event.quantity
        limit = item.quota.limit
        resets_at = item.period[1]
        if counter_key in undecided:
            allowance = item.quota.allowance
            if allowance is not None and used + reserved + quantity > allowance:
                refused_ids.append(pk)
                results[item.index] = _refused(
                    "quota_exceeded",
                    limit=limit,
                    used=used,
                    remaining=_remaining(limit, used, reserved),
                    resets_at=resets_at,
                    period_start=_shown_start(item.period),
                )
                continue
            added[counter_key] += quantity
        values[1] = used = used + quantity
        over = limit is not None and used > limit
        if over:
            over_ids.append(pk)
        results[item.index] = EventResult(
            status="recorded",
            record_id=pk,
            quantity=quantity,
            over_limit=over,
            period_start=_shown_start(item.period),
            limit=limit,
            used=used,
            remaining=_remaining(limit, used, reserved),
            resets_at=resets_at,
        )
    record_table = UsageRecord._meta.db_table
    with connection.cursor() as cursor:
        if refused_ids:
            cursor.execute(
                f"DELETE FROM {record_table} WHERE id IN ({', '.join(['%s'] * len(refused_ids))})",  # noqa: S608 - table names from the models, values as parameters
                refused_ids,
            )
        if over_ids:
            cursor.execute(
                f"UPDATE {record_table} SET over_limit = true "  # noqa: S608 - table names from the models, values as parameters
                f"WHERE id IN ({', '.join(['%s'] * len(over_ids))})",
                over_ids,
            )
    if added:
        updated = _counters_add(
            {state[ck][0]: (n, keys[ck].quota.allowance, keys[ck].quota.limit) for ck, n in added.items()}
        )
        for ck in added:
            state[ck][3] = updated[state[ck][0]]
    changed = [ck for ck in state if ck in counted or ck in added]
    crossings: list[Crossing] = []
    for ck in changed:
        limit_of = keys[ck].quota.limit
        if limit_of is not None:
            crossings.append((ck, state[ck][0], limit_of, before[ck], state[ck][1]))
    thresholds_record(crossings=crossings, now=now)
    mirrored = [
        mirror.CounterValues(
            user_id=keys[ck].quota.user_id if keys[ck].quota.family_id is None else None,
            family_id=keys[ck].quota.family_id,
            feature=ck[1],
            period_start=ck[2],
            used=state[ck][1],
            reserved=state[ck][2],
            seq=state[ck][3],
        )
        for ck in changed
    ]
    if mirrored:
        transaction.on_commit(lambda: mirror.counters_mirror_values(counters=mirrored))


def _counters_add(changes: dict[int, tuple[int, int | None, int | None]]) -> dict[int, int]:
    """ONE conditional UPDATE: each counter's used += n where used + reserved + n fits its allowance;
    {id: its new seq}.

    The caller holds the rows' locks, so every row matches; a row that did not would be an overrun
    the database refused, and the whole batch is rolled back rather than half-counted. The changes
    are joined as a VALUES list (id, n, allowance, limit): one look-up per row, where a CASE per
    column would compare every row with every id.
    """
    table = UsageCounter._meta.db_table
    ids = sorted(changes)
    first = "(CAST(%s AS BIGINT), CAST(%s AS BIGINT), CAST(%s AS BIGINT), CAST(%s AS BIGINT))"
    values = ", ".join([first] + ["(%s, %s, %s, %s)"] * (len(ids) - 1))
    params: list[Any] = [_db_dt(timezone.now())]
    for pk in ids:
        n, allowance, limit = changes[pk]
        params += [pk, n, allowance, limit]
    # VALUES columns are column1..column4 in both PostgreSQL and SQLite.
    sql = (
        f"UPDATE {table} SET used = {table}.used + v.column2, "  # noqa: S608 - table names from the models, values as parameters
        f'"limit" = v.column4, allowance = v.column3, seq = {table}.seq + 1, updated_at = %s '
        f"FROM (VALUES {values}) AS v WHERE {table}.id = v.column1 AND "
        f"(v.column3 IS NULL OR {table}.used + {table}.reserved + v.column2 <= v.column3) "
        f"RETURNING {table}.id, {table}.seq"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        updated = dict(cursor.fetchall())
    if set(updated) != set(ids):
        raise RuntimeError(
            f"usage counters {sorted(set(ids) - set(updated))} refused an increment under lock"
        )
    return updated


def _answer_duplicates(duplicates: list[_Pending], results: list[EventResult | None], now: datetime) -> None:
    """A key seen before: the same body replays the first answer's record, another is
    idempotency_key_reused."""
    table = UsageRecord._meta.db_table
    wanted = ", ".join(["(%s, %s, %s)"] * len(duplicates))
    params: list[Any] = []
    for item in duplicates:
        params += [item.event.user_id, item.event.feature, item.event.idempotency_key]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, user_id, feature_code, idempotency_key, fingerprint, quantity, over_limit, "  # noqa: S608 - table names from the models, values as parameters
            f"period_start FROM {table} WHERE (user_id, feature_code, idempotency_key) IN (VALUES {wanted})",
            params,
        )
        found = {(row[1], row[2], row[3]): row for row in cursor.fetchall()}
    for item in duplicates:
        row = found.get((item.event.user_id, item.event.feature, item.event.idempotency_key))
        if row is None:  # pragma: no cover - deleted between the insert and this read: cannot happen
            raise RuntimeError("a duplicate usage record vanished")
        start = _dt(row[7])
        # The first answer's record and period (the epoch keys only the one period of a
        # never-resetting limit). Not its used and remaining: the counter has moved on since.
        replay = EventResult(
            status="duplicate",
            record_id=row[0],
            quantity=row[5],
            over_limit=bool(row[6]),
            period_start=None if start == EPOCH else start,
            limit=item.quota.limit,
            resets_at=item.quota.period(start)[1],
        )
        item.stored = (row[4], replay)
        results[item.index] = replay if row[4] == item.fingerprint else _refused("idempotency_key_reused")


def usage_event_record(*, event: UsageEvent, now: datetime | None = None) -> EventResult:
    """One event: the result, or the refusal raised (429 quota_exceeded, 409 for a reused key...)."""
    result = usage_events_record(events=[event], now=now)[0]
    if result.status != "refused":
        return result
    code = result.code or "refused"
    if code == "quota_exceeded":
        raise QuotaExceeded(
            result.message,
            extra={
                "limit": result.limit,
                "used": result.used,
                "remaining": result.remaining,
                "resets_at": result.resets_at,  # written as every answer writes times (...Z)
            },
        )
    if code == "idempotency_key_reused":
        raise Conflict(result.message, code=code)
    if code in ("unknown_feature", "not_metered", "not_entitled"):
        raise DomainError(result.message, code=code, status_code=403 if code == "not_entitled" else 400)
    raise DomainError(
        result.message, code=code, fields={"occurred_at": [{"code": code, "message": result.message}]}
    )


# --- reservations ---------------------------------------------------------------------------------


def _quota_for(*, user_id: int, feature: str, now: datetime) -> Quota:
    quota = quotas_resolve(pairs=[(user_id, feature)], at=now)[(user_id, feature)]
    if isinstance(quota, str):
        raise DomainError(
            REFUSAL_MESSAGES[quota], code=quota, status_code=403 if quota == "not_entitled" else 400
        )
    return quota


def _counter_locked(
    *, quota: Quota, feature: str, period: tuple[datetime, datetime | None], now: datetime
) -> list[int]:
    item = _Pending(0, UsageEvent(user_id=0, feature=feature, idempotency_key=""), quota, period, now, "")
    key = (quota.subject, feature, period[0])
    return _counters_lock({key: item}, now)[key]


def usage_reservation_create(
    *,
    user_id: int,
    feature: str,
    quantity: int,
    idempotency_key: str,
    ttl_seconds: int | None = None,
    now: datetime | None = None,
) -> tuple[UsageReservation, bool]:
    """Hold `quantity` units (counted against the quota) until settled, released or expired: the
    reservation, and whether this call made it.

    The same key answers the same reservation (a retry: False); another quantity with it is refused.
    """
    now = now or timezone.now()
    quota = _quota_for(user_id=user_id, feature=feature, now=now)
    period = quota.period(now)
    ttl = ttl_seconds or settings.USAGE_RESERVATION_TTL_SECONDS
    with transaction.atomic():
        counter_id, used, reserved = _counter_locked(quota=quota, feature=feature, period=period, now=now)
        existing = UsageReservation.objects.filter(
            user_id=user_id, feature_code=feature, idempotency_key=idempotency_key
        ).first()
        if existing is not None:
            if existing.quantity != quantity:
                raise Conflict(REFUSAL_MESSAGES["idempotency_key_reused"], code="idempotency_key_reused")
            return existing, False
        allowance = quota.allowance
        updated = UsageCounter.objects.filter(pk=counter_id)
        if allowance is not None:
            updated = updated.filter(used__lte=allowance - quantity - F("reserved"))
        if not updated.update(reserved=F("reserved") + quantity, seq=F("seq") + 1, updated_at=now):
            raise QuotaExceeded(
                REFUSAL_MESSAGES["quota_exceeded"],
                extra={
                    "limit": quota.limit,
                    "used": used,
                    "remaining": _remaining(quota.limit, used, reserved),
                    "resets_at": period[1],
                },
            )
        reservation = UsageReservation.objects.create(
            user_id=user_id,
            family_id=quota.family_id,
            subject=quota.subject,
            feature_code=feature,
            period_start=period[0],
            quantity=quantity,
            idempotency_key=idempotency_key,
            expires_at=now + timedelta(seconds=ttl),
            created_at=now,
        )
        transaction.on_commit(lambda: mirror.counters_mirror(counter_ids=[counter_id]))
    return reservation, True


def _reservation_close(
    *, reservation_id: int, user_id: int | None, status: str, actual: int | None, now: datetime
) -> UsageReservation:
    with transaction.atomic():
        rows = UsageReservation.objects.select_for_update().filter(pk=reservation_id)
        if user_id is not None:
            rows = rows.filter(user_id=user_id)
        reservation = rows.first()
        if reservation is None:
            raise NotFound("No such reservation.")
        if reservation.status != UsageReservation.Status.HELD:
            if reservation.status == status and (actual is None or reservation.settled_quantity == actual):
                return reservation  # the same close retried
            raise Conflict(f"The reservation is already {reservation.status}.", code="reservation_closed")
        if actual is not None and not 0 <= actual <= reservation.quantity:
            raise DomainError(
                "The settled amount must be between 0 and the reserved quantity.",
                code="validation_error",
                fields={"quantity": [{"code": "invalid", "message": "Between 0 and the reserved quantity."}]},
            )
        counter = UsageCounter.objects.select_for_update().get(
            subject=reservation.subject,
            feature_code=reservation.feature_code,
            period_start=reservation.period_start,
        )
        counter.reserved -= reservation.quantity
        counter.used += actual or 0
        counter.seq += 1
        counter.save(update_fields=["reserved", "used", "seq", "updated_at"])
        reservation.status = status
        reservation.settled_quantity = actual
        reservation.closed_at = now
        reservation.save(update_fields=["status", "settled_quantity", "closed_at"])
        if actual:
            UsageRecord.objects.create(
                user_id=reservation.user_id,
                family_id=reservation.family_id,
                subject=reservation.subject,
                feature_code=reservation.feature_code,
                quantity=actual,
                # A key no client can send (the API refuses non-printable characters).
                idempotency_key=f"{RESERVATION_KEY_PREFIX}{reservation.pk}",
                fingerprint="",
                occurred_at=now,
                recorded_at=now,
                period_start=reservation.period_start,
                over_limit=counter.limit is not None and counter.used > counter.limit,
                reservation=reservation,
            )
            if counter.limit is not None:
                thresholds_record(
                    crossings=[
                        (
                            (counter.subject, counter.feature_code, counter.period_start),
                            counter.pk,
                            counter.limit,
                            counter.used - actual,
                            counter.used,
                        )
                    ],
                    now=now,
                )
        counter_id = counter.pk
        transaction.on_commit(lambda: mirror.counters_mirror(counter_ids=[counter_id]))
    return reservation


def usage_reservation_settle(
    *, reservation_id: int, quantity: int, user_id: int | None = None, now: datetime | None = None
) -> UsageReservation:
    """Record the actual amount (at most what was held) and free the hold, in one transaction."""
    return _reservation_close(
        reservation_id=reservation_id,
        user_id=user_id,
        status=UsageReservation.Status.SETTLED,
        actual=quantity,
        now=now or timezone.now(),
    )


def usage_reservation_release(
    *, reservation_id: int, user_id: int | None = None, now: datetime | None = None
) -> UsageReservation:
    return _reservation_close(
        reservation_id=reservation_id,
        user_id=user_id,
        status=UsageReservation.Status.RELEASED,
        actual=None,
        now=now or timezone.now(),
    )


def usage_reservations_expire(*, now: datetime | None = None, limit: int = 500) -> int:
    """Release the holds whose TTL passed (the beat sweep): a crashed client never leaks quota."""
    now = now or timezone.now()
    ids = list(
        UsageReservation.objects.filter(status=UsageReservation.Status.HELD, expires_at__lte=now)
        .order_by("expires_at")
        .values_list("pk", flat=True)[:limit]
    )
    expired = 0
    for pk in ids:
        try:
            _reservation_close(
                reservation_id=pk, user_id=None, status=UsageReservation.Status.EXPIRED, actual=None, now=now
            )
            expired += 1
        except Conflict:
            continue  # settled or released meanwhile
    return expired


# --- staff corrections ----------------------------------------------------------------------------


def usage_adjustment_create(
    *, counter_id: int, quantity: int, reason: str, staff_user: Any
) -> UsageAdjustment:
    """A signed correction of one counter, recorded beside it (history is never edited), audited."""
    reason = reason.strip()
    if not reason:
        raise DomainError("A reason is required.", code="validation_error")
    if quantity == 0 or abs(quantity) > MAX_QUANTITY:
        raise DomainError("The correction must be a non-zero number of units.", code="validation_error")
    with transaction.atomic():
        counter = UsageCounter.objects.select_for_update().filter(pk=counter_id).first()
        if counter is None:
            raise NotFound("No such counter.")
        if counter.used + quantity < 0:
            raise DomainError("The correction would make the counter negative.", code="validation_error")
        adjustment = UsageAdjustment.objects.create(
            subject=counter.subject,
            user_id=counter.user_id,
            family_id=counter.family_id,
            feature_code=counter.feature_code,
            period_start=counter.period_start,
            quantity=quantity,
            reason=reason[:1000],
            staff_user=staff_user if getattr(staff_user, "is_authenticated", False) else None,
        )
        counter.used += quantity
        counter.seq += 1
        counter.save(update_fields=["used", "seq", "updated_at"])
        audit_record(
            actor=staff_user,
            action="usage_adjust",
            target=counter,
            subject_user_id=counter.user_id,
            reason=reason,
            data={"quantity": quantity, "feature": counter.feature_code, "adjustment_id": adjustment.pk},
        )
        transaction.on_commit(lambda: mirror.counters_mirror(counter_ids=[counter_id]))
    return adjustment


METER_CURSOR = "stripe-meters"
# Stripe takes meter events up to 35 days old; a longer outage of this job starts from there.
METER_MAX_AGE = timedelta(days=35)


def usage_meter_windows_report(*, now: datetime | None = None, max_windows: int = 200) -> int:
    """Beat: hand every closed window of metered usage to billing as one meter report per
    (Stripe customer, meter), oldest window first, and move the cursor past it. Returns how many
    windows were closed.

    Each window commits with its cursor move: a crash repeats at most one window, and recording a
    window again is a no-op (meter reports are unique per customer, meter and window). Two runs at
    once compute the same totals; the cursor only moves forward (a conditional UPDATE)."""
    now = now or timezone.now()
    closed_until, _ = meter_window(at=now - METER_SETTLE)
    cursor = (
        UsageMeterCursor.objects.filter(name=METER_CURSOR).values_list("reported_until", flat=True).first()
    )
    if cursor is None:
        first = UsageRecord.objects.order_by("recorded_at").values_list("recorded_at", flat=True).first()
        if first is None:
            return 0
        cursor, _ = meter_window(at=first)
    start = max(cursor, meter_window(at=now - METER_MAX_AGE)[0])
    closed = 0
    while start < closed_until and closed < max_windows:
        # Never before the cursor: after a change of METERING_WINDOW_SECONDS the window holding the
        # cursor may begin earlier, and its units were reported already (that part is skipped).
        window_start, end = max(meter_window(at=start)[0], start), meter_window(at=start)[1]
        totals = usage_metered_totals(start=window_start, end=end)
        with transaction.atomic():
            for (customer, event_name), value in sorted(totals.items()):
                meter_report_record(
                    stripe_customer_id=customer,
                    event_name=event_name,
                    window_start=window_start,
                    window_end=end,
                    value=value,
                )
            moved = UsageMeterCursor.objects.filter(name=METER_CURSOR, reported_until__lt=end).update(
                reported_until=end
            )
            if not moved:
                UsageMeterCursor.objects.get_or_create(name=METER_CURSOR, defaults={"reported_until": end})
        start = end
        closed += 1
    return closed
