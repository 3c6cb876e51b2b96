"""Reads of the usage app: whose quota an event draws on, counters, totals for billing, history."""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Q, QuerySet, Sum
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from djstripe.models import Customer

from billing.metering.services import meter_window
from billing.models import Feature, Plan, PlanFeature
from entitlements.models import Entitlement
from entitlements.periods import period_bounds
from payments_project.db import prepared_cursor
from subscriptions.models import Family, FamilyMember, Subscription
from usage.models import UsageAdjustment, UsageCounter, UsageRecord

METERED_KINDS = (Feature.Kind.METERED, Feature.Kind.LIMIT)


@dataclass(frozen=True)
class Quota:
    """The quota an event of one user on one feature draws on (from the user's best entitlement)."""

    subject: str
    user_id: int | None
    family_id: int | None
    limit: int | None
    policy: str
    overage_percent: int
    reset_period: str
    anchor: datetime | None
    interval: str
    interval_count: int
    # When the entitlement began: no event can have happened under it before then (the grace
    # window for late events must not reach a period from before the subscription).
    granted_at: datetime | None = None

    @property
    def allowance(self) -> int | None:
        """The most `used + reserved` may reach; None: nothing is ever refused (unlimited, soft)."""
        if self.limit is None or self.policy == PlanFeature.QuotaPolicy.SOFT:
            return None
        if self.policy == PlanFeature.QuotaPolicy.OVERAGE:
            return self.limit + self.limit * self.overage_percent // 100
        return self.limit

    def period(self, at: datetime) -> tuple[datetime, datetime | None]:
        return period_bounds(
            reset_period=self.reset_period,
            anchor=self.anchor,
            interval=self.interval,
            interval_count=self.interval_count,
            at=at,
        )


def subject_of(*, user_id: int | None = None, family_id: int | None = None) -> str:
    return f"f{family_id}" if family_id is not None else f"u{user_id}"


_INF = float("inf")


def aware_utc(value: Any) -> datetime | None:
    """A datetime column read by raw SQL, aware in UTC: SQLite (`make run`) hands back naive
    datetimes, or text, where PostgreSQL gives aware ones."""
    if value is None:
        return None
    parsed = value if isinstance(value, datetime) else parse_datetime(str(value))
    if parsed is None:
        return None
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)


@functools.lru_cache(maxsize=256)  # bounded: on SQLite batches name any mix of users and codes
def _quotas_sql(users: int, codes: int) -> str:
    """The live metered entitlements of some users and feature codes: their own (for_user = the
    holder) UNION ALL their family's (for_user = each member asked about), each with the feature's
    kind, the plan's interval and the plan feature's quota policy.

    Hand-written rather than built by the ORM: it runs on every usage event, and compiling the
    ORM's version cost more than running it. On PostgreSQL (users and codes 0) one text takes the
    users and the codes as two arrays, so it is prepared once per connection
    (payments_project.db); on SQLite each count of placeholders is a shape of its own, built once.
    """
    if users and codes:
        return _quotas_select(
            code_in=f"IN ({', '.join(['%s'] * codes)})", user_in=f"IN ({', '.join(['%s'] * users)})"
        )
    # Named: each array is sent (and dumped by psycopg) once though the text uses it twice.
    return _quotas_select(code_in="= ANY(%(codes)s)", user_in="= ANY(%(users)s)")


def _quotas_select(*, code_in: str, user_in: str) -> str:
    e, f, p = Entitlement._meta.db_table, Feature._meta.db_table, Plan._meta.db_table
    s, pf, m = Subscription._meta.db_table, PlanFeature._meta.db_table, FamilyMember._meta.db_table
    kinds = ", ".join(f"'{kind}'" for kind in METERED_KINDS)
    columns = (
        'e.user_id, e.family_id, f.code, f.kind, e."limit", e.reset_period, e.expires_at, e.granted_at, '
        'sub.current_period_start, p."interval", p.interval_count, pf.quota_policy, pf.overage_percent'
    )
    joins = (
        f"JOIN {f} f ON f.id = e.feature_id "
        f"LEFT JOIN {p} p ON p.id = e.plan_id "
        f"LEFT JOIN {s} sub ON sub.id = e.subscription_id "
        f"LEFT JOIN {pf} pf ON pf.plan_id = e.plan_id AND pf.feature_id = e.feature_id "
    )
    live = f"e.status = '{Entitlement.Status.ACTIVE}' AND f.kind IN ({kinds}) AND f.code {code_in}"
    return (
        f"SELECT e.user_id, {columns} FROM {e} e {joins}"  # noqa: S608 - names from the models, values as parameters
        f"WHERE {live} AND e.user_id {user_in} "
        f"UNION ALL SELECT m.user_id, {columns} FROM {e} e {joins}"
        f"JOIN {m} m ON m.family_id = e.family_id "
        f"WHERE {live} AND m.user_id {user_in}"
    )


def quotas_resolve(*, pairs: Iterable[tuple[int, str]], at: datetime) -> dict[tuple[int, str], Quota | str]:
    """For each (user id, feature code): its Quota, or why nothing can be recorded
    (`unknown_feature`, `not_metered`, `not_entitled`).

    ONE query in the common case (own rows UNION ALL the rows of each user's family, with the
    feature's kind and the plan feature's policy); a second one only for pairs with no live row, to
    tell an unknown or on/off feature from one the user does not hold. The entitlement chosen is
    the one the entitlement check grants: live (active, not expired), own or the user's family's,
    the longest-lasting then the largest limit.
    """
    wanted = set(pairs)
    if not wanted:
        return {}
    user_ids = sorted({user_id for user_id, _ in wanted})
    codes = sorted({code for _, code in wanted})
    by_user: dict[tuple[int, str], list[tuple[Any, ...]]] = {}
    params: dict[str, Any] | list[Any]
    if connection.vendor == "postgresql":
        sql, params = _quotas_sql(0, 0), {"codes": codes, "users": user_ids}
    else:
        sql, params = _quotas_sql(len(user_ids), len(codes)), [*codes, *user_ids, *codes, *user_ids]
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        for row in cursor.fetchall():
            by_user.setdefault((row[0], row[3]), []).append(_candidate(row))
    missing = {code for user_id, code in wanted if (user_id, code) not in by_user}
    # Rare (a refusal): an empty look-up would still cost the ORM's compiling.
    refusals = _refusals(missing) if missing else {}
    out: dict[tuple[int, str], Quota | str] = {}
    for pair in wanted:
        candidates = by_user.get(pair)
        out[pair] = _quota_choose(candidates, at) if candidates else refusals[pair[1]]
    return out


def _refusals(codes: Collection[str]) -> dict[str, str]:
    """Why a user with no live row for a feature can record nothing: `unknown_feature`,
    `not_metered` (an on/off feature) or `not_entitled`, per code."""
    kinds = dict(Feature.objects.filter(code__in=codes).values_list("code", "kind"))
    return {
        code: "unknown_feature"
        if code not in kinds
        else "not_entitled"
        if kinds[code] in METERED_KINDS
        else "not_metered"
        for code in codes
    }


def _candidate(row: Sequence[Any]) -> tuple[Any, ...]:
    """A row of _quotas_sql without its first column (the user asked about), times aware: user_id,
    family_id, code, kind, limit, reset_period, expires_at, granted_at, subscription period start,
    plan interval, interval count, policy, overage percent."""
    _, user_id, family_id, code, kind, limit, reset, expires, granted, start, *rest = row
    return (
        user_id,
        family_id,
        code,
        kind,
        limit,
        reset,
        aware_utc(expires),
        aware_utc(granted),
        aware_utc(start),
        *rest,
    )


def _quota_choose(candidates: Sequence[tuple[Any, ...]], at: datetime) -> Quota | str:
    """The quota of the entitlement the check grants among a user's live rows for one feature:
    not expired at `at`, the longest-lasting then the largest limit; `not_entitled` if none."""
    best: tuple[tuple[float, float], tuple[Any, ...]] | None = None
    for row in candidates:
        expires = row[6]
        if expires is not None and expires <= at:
            continue
        key = (
            _INF if expires is None else expires.timestamp(),
            _INF if row[4] is None else float(row[4]),
        )
        if best is None or key > best[0]:
            best = (key, row)
    if best is None:
        return "not_entitled"
    row = best[1]
    return Quota(
        subject=subject_of(user_id=row[0], family_id=row[1]),
        user_id=row[0],
        family_id=row[1],
        limit=row[4],
        policy=row[11] or PlanFeature.QuotaPolicy.HARD,
        overage_percent=row[12] or 0,
        reset_period=row[5] or "never",
        anchor=row[8] or row[7],
        interval=row[9] or "month",
        interval_count=row[10] or 1,
        granted_at=row[7],
    )


# --- one user's quota for one feature, as last read by this process (PostgreSQL) -----------------
# The single-event ingest (usage.services) records an event in ONE statement when this process has
# read the user's quota rows before: the statement computes the rows' fingerprint again
# (QUOTA_FINGERPRINT_SQL) and writes nothing unless it is the one read with them, so a quota
# changed meanwhile (a plan, a cancellation, a family) is never drawn on: the rows remembered
# here only spare the read while they stay the database's. Bounded, per process.

# PostgreSQL's text of the rows, in one order: the same rows give the same text.
_FINGERPRINT = "(SELECT md5(string_agg(q::text, ',' ORDER BY q::text)) FROM {rows} q)"
# One pair's rows, by the named scalars %(u)s (user id) and %(c)s (feature code): against the
# arrays of _quotas_sql(0, 0) the generic plan reads the few rows by index instead of hashing whole
# tables, and psycopg dumps no array (the fingerprint's query alone: 0.37 ms of PostgreSQL's CPU,
# now 0.18-0.29, on a slow machine).
_QUOTAS_ONE = _quotas_select(code_in="= %(c)s", user_in="= %(u)s")
QUOTA_FINGERPRINT_SQL = _FINGERPRINT.format(rows=f"({_QUOTAS_ONE})")
# The quota rows of one pair, each with the fingerprint of them all.
_QUOTA_ONE_SQL = f"WITH q AS ({_QUOTAS_ONE}) SELECT *, {_FINGERPRINT.format(rows='q')} FROM q"  # noqa: S608 - no value in the text
_remembered: dict[tuple[int, str], tuple[list[tuple[Any, ...]], str]] = {}
REMEMBERED_MAX = 10_000


def quota_remembered(*, user_id: int, code: str, at: datetime) -> tuple[Quota, str] | None:
    """(the quota at `at`, the fingerprint of the rows it comes from) as last read by this
    process, or None (never read, or no live entitlement among them)."""
    entry = _remembered.get((user_id, code))
    if entry is None:
        return None
    quota = _quota_choose(entry[0], at)
    return None if isinstance(quota, str) else (quota, entry[1])


def quota_forget(*, user_id: int, code: str) -> None:
    _remembered.pop((user_id, code), None)


def quota_one_resolve(*, user_id: int, code: str, at: datetime) -> tuple[Quota | str, str | None]:
    """quotas_resolve of one pair on PostgreSQL, with the fingerprint of its rows, remembered
    (quota_remembered); the fingerprint is None when the pair has no live row."""
    with prepared_cursor() as cursor:
        cursor.execute(_QUOTA_ONE_SQL, {"c": code, "u": user_id})
        rows = cursor.fetchall()
    if not rows:
        return _refusals([code])[code], None
    candidates = [_candidate(row[:-1]) for row in rows]
    fingerprint = rows[0][-1]
    if len(_remembered) >= REMEMBERED_MAX:
        _remembered.clear()  # simple bound: the hot pairs are read again at once
    _remembered[(user_id, code)] = (candidates, fingerprint)
    return _quota_choose(candidates, at), fingerprint


@dataclass(frozen=True)
class UsageTotal:
    user_id: int | None
    family_id: int | None
    feature_code: str
    quantity: int


def usage_totals(
    *, start: datetime, end: datetime, feature_codes: Collection[str] | None = None
) -> list[UsageTotal]:
    """Recorded units per (user, family pool, feature) for events that occurred in [start, end).

    Refused events are never recorded, so every row counts. Staff adjustments are not events and
    have no occurrence time: they correct quotas, not what happened (billing reads records only).
    """
    records = UsageRecord.objects.filter(occurred_at__gte=start, occurred_at__lt=end)
    if feature_codes is not None:
        records = records.filter(feature_code__in=list(feature_codes))
    rows = (
        records.values("user_id", "family_id", "feature_code")
        .annotate(total=Sum("quantity"))
        .order_by("user_id", "family_id", "feature_code")
    )
    return [
        UsageTotal(
            user_id=row["user_id"],
            family_id=row["family_id"],
            feature_code=row["feature_code"],
            quantity=int(row["total"]),
        )
        for row in rows
    ]


def counter_get(*, subject: str, feature_code: str, period_start: datetime) -> UsageCounter | None:
    return UsageCounter.objects.filter(
        subject=subject, feature_code=feature_code, period_start=period_start
    ).first()


def ledger_sums(*, subject: str, feature_code: str, period_start: datetime) -> int:
    """What the ledger says a counter's `used` must be: records plus adjustments."""
    records = UsageRecord.objects.filter(
        subject=subject, feature_code=feature_code, period_start=period_start
    ).aggregate(total=Sum("quantity"))["total"]
    adjustments = UsageAdjustment.objects.filter(
        subject=subject, feature_code=feature_code, period_start=period_start
    ).aggregate(total=Sum("quantity"))["total"]
    return int(records or 0) + int(adjustments or 0)


def usage_history(
    *,
    user_id: int,
    feature_code: str | None = None,
    occurred_after: datetime | None = None,
    occurred_before: datetime | None = None,
    operation: str | None = None,
    resource_type: str | None = None,
) -> QuerySet[UsageRecord]:
    """A user's own recorded events, newest first."""
    records = UsageRecord.objects.filter(user_id=user_id)
    if feature_code:
        records = records.filter(feature_code=feature_code)
    if occurred_after is not None:
        records = records.filter(occurred_at__gte=occurred_after)
    if occurred_before is not None:
        records = records.filter(occurred_at__lt=occurred_before)
    if operation:
        records = records.filter(operation=operation)
    if resource_type:
        records = records.filter(resource_type=resource_type)
    return records.order_by("-occurred_at", "-id")


@dataclass(frozen=True)
class UsageSummary:
    feature: str
    subject: str
    period_start: datetime | None
    period_end: datetime | None
    limit: int | None
    used: int
    reserved: int
    remaining: int | None
    policy: str


def usage_summary(*, user_id: int, feature_code: str, at: datetime) -> UsageSummary | str:
    """The current period's consumption of one feature, or why there is none (a refusal code)."""
    quota = quotas_resolve(pairs=[(user_id, feature_code)], at=at)[(user_id, feature_code)]
    if isinstance(quota, str):
        return quota
    start, end = quota.period(at)
    counter = counter_get(subject=quota.subject, feature_code=feature_code, period_start=start)
    return _summary(feature_code, quota, (start, end), counter)


def _summary(
    code: str, quota: Quota, period: tuple[datetime, datetime | None], counter: UsageCounter | None
) -> UsageSummary:
    """A feature's consumption in one period; no counter yet: nothing used. A limit that never
    resets has no period (None), not the epoch its counter is keyed by."""
    start, end = period
    used = counter.used if counter else 0
    reserved = counter.reserved if counter else 0
    return UsageSummary(
        feature=code,
        subject=quota.subject,
        period_start=start if end is not None else None,
        period_end=end,
        limit=quota.limit,
        used=used,
        reserved=reserved,
        remaining=None if quota.limit is None else max(quota.limit - used - reserved, 0),
        policy=quota.policy,
    )


# A window is reported this long after it ends: every transaction that recorded a unit in it (a
# batch is well under a second) has committed by then.
METER_SETTLE = timedelta(minutes=2)


def usage_metered_totals(*, start: datetime, end: datetime) -> dict[tuple[str, str], int]:
    """{(Stripe customer id, meter event name): units recorded in [start, end)} of the features
    billed per unit (a meter event name set in the catalog).

    Windows go by `recorded_at`, when the unit reached the ledger, not by `occurred_at`: an event
    may arrive late (anywhere in its open period), and a closed window's total never changes, so
    only the time of recording puts every unit in exactly one window. A family pool's units are
    billed to the family's owner, who pays for the plan; users without a Stripe customer have
    nothing to bill and are left out.
    """
    meters = dict(Feature.objects.exclude(meter_event_name="").values_list("code", "meter_event_name"))
    if not meters:
        return {}
    rows = list(
        UsageRecord.objects.filter(recorded_at__gte=start, recorded_at__lt=end, feature_code__in=list(meters))
        .values_list("user_id", "family_id", "feature_code")
        .annotate(total=Sum("quantity"))
        .order_by()
    )
    owners = dict(
        Family.objects.filter(pk__in={family for _, family, _, _ in rows if family}).values_list(
            "pk", "owner_id"
        )
    )
    payers = {owners.get(family) if family else user for user, family, _, _ in rows}
    customers = dict(
        Customer.objects.filter(subscriber_id__in=payers, livemode=settings.STRIPE_LIVE_MODE)
        .order_by("subscriber_id", "-created")
        .values_list("subscriber_id", "id")
    )
    totals: dict[tuple[str, str], int] = {}
    for user, family, code, total in rows:
        customer = customers.get(owners.get(family) if family else user)
        if customer:
            key = (str(customer), meters[code])
            totals[key] = totals.get(key, 0) + int(total)
    return totals


def usage_meter_totals_closed(*, start: datetime, end: datetime) -> dict[tuple[str, str], int]:
    """The ledger's side of `manage.py usage_reconcile` (METERING_USAGE_TOTALS): as
    usage_metered_totals, up to the last window closed by now. A closed window the reporting job
    has not handed to Stripe yet shows as a difference, as it should."""
    closed_until, _ = meter_window(at=timezone.now() - METER_SETTLE)
    return usage_metered_totals(start=start, end=min(end, closed_until))


def usage_summaries_for_user(*, user_id: int, at: datetime) -> list[UsageSummary]:
    """The current period's consumption of every metered or limited feature the user holds (own
    or through their family's pool), by feature code: what the staff console's customer page shows.

    Three queries whatever the number of features: the features held, their quotas, the counters.
    A feature with no counter yet has used nothing in this period.
    """
    held = Entitlement.objects.filter(
        Q(user_id=user_id) | Q(family__members__user_id=user_id),
        status=Entitlement.Status.ACTIVE,
        feature__kind__in=METERED_KINDS,
    )
    codes = sorted(set(held.values_list("feature__code", flat=True)))
    quotas = {
        code: quota
        for (_, code), quota in quotas_resolve(pairs=[(user_id, code) for code in codes], at=at).items()
        if not isinstance(quota, str)
    }
    periods = {code: quota.period(at) for code, quota in quotas.items()}
    wanted = Q(pk__in=[])
    for code, quota in quotas.items():
        wanted |= Q(subject=quota.subject, feature_code=code, period_start=periods[code][0])
    counters = {counter.feature_code: counter for counter in UsageCounter.objects.filter(wanted)}
    return [_summary(code, quotas[code], periods[code], counters.get(code)) for code in sorted(quotas)]
