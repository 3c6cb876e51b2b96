"""Counters mirrored into the users' entitlement snapshots in Redis, after commit.

PostgreSQL holds the counters; Redis only mirrors them so a warm entitlement check reads limit and
used in its one round trip. The key layout belongs to entitlements (entitlements.cache: a
`__u:<feature>` field in each user's snapshot hash); a family pool's counter is mirrored into every
member's snapshot. A write that cannot reach Redis leaves SnapshotInvalidation rows, so the beat job
drops those snapshots once Redis answers and the next check rebuilds them from PostgreSQL: a flush
or an outage loses no unit and never serves a stale count for long.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import DatabaseError

from entitlements import cache
from entitlements.models import SnapshotInvalidation
from subscriptions.models import FamilyMember
from usage.models import UsageCounter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CounterValues:
    """A counter's values as its writer left them (under its lock, so `seq` orders them)."""

    user_id: int | None
    family_id: int | None
    feature: str
    period_start: datetime
    used: int
    reserved: int
    seq: int


def counters_mirror(*, counter_ids: Sequence[int]) -> None:
    """Copy the counters' values, read again, into the snapshots of the users who draw on them.
    Never raises."""
    if not counter_ids or not cache.redis_configured():
        return
    try:
        counters = [
            CounterValues(*row)
            for row in UsageCounter.objects.filter(pk__in=list(counter_ids)).values_list(
                "user_id", "family_id", "feature_code", "period_start", "used", "reserved", "seq"
            )
        ]
    except DatabaseError:
        logger.warning("usage counters %s not mirrored (database)", list(counter_ids), exc_info=True)
        return
    counters_mirror_values(counters=counters)


def counters_mirror_values(*, counters: Sequence[CounterValues]) -> None:
    """Copy counters' values as their writer returned them (no read again) into the snapshots of
    the users who draw on them. Never raises."""
    if not counters or not cache.redis_configured():
        return
    members: dict[int, list[int]] = defaultdict(list)
    families = {counter.family_id for counter in counters if counter.family_id is not None}
    if families:
        try:
            for user_id, family_id in FamilyMember.objects.filter(family_id__in=families).values_list(
                "user_id", "family_id"
            ):
                members[family_id].append(user_id)
        except DatabaseError:
            logger.warning("usage counters of families %s not mirrored (database)", families, exc_info=True)
            return
    updates: list[cache.UsageMirror] = []
    for counter in counters:
        if counter.family_id is not None:
            users = members.get(counter.family_id, [])
        else:
            users = [counter.user_id] if counter.user_id is not None else []
        for member in users:
            updates.append(
                cache.UsageMirror(
                    user_id=member,
                    feature=counter.feature,
                    period_start=counter.period_start.timestamp(),
                    used=counter.used,
                    reserved=counter.reserved,
                    seq=counter.seq,
                )
            )
    if cache.usage_mirror_write(updates=updates):
        return
    try:
        SnapshotInvalidation.objects.bulk_create(
            [SnapshotInvalidation(user_id=user_id) for user_id in sorted({u.user_id for u in updates})]
        )
    except DatabaseError:
        logger.warning("usage mirror of users %s neither written nor queued", exc_info=True)


def counters_for_snapshot(
    *, user_id: int, wanted: Sequence[tuple[str, str, float]]
) -> dict[str, tuple[float, int, int, int]]:
    """The entitlement snapshot's usage fields, from PostgreSQL (registered in entitlements by
    UsageConfig.ready): for each (feature, subject, period start) the counter's values (zeros when it
    does not exist yet)."""
    from datetime import UTC, datetime

    from django.db.models import Q

    if not wanted:
        return {}
    query = Q()
    for code, subject, start in wanted:
        query |= Q(subject=subject, feature_code=code, period_start=datetime.fromtimestamp(start, UTC))
    found = {
        (subject, code, start.timestamp()): (used, reserved, seq)
        for subject, code, start, used, reserved, seq in UsageCounter.objects.filter(query).values_list(
            "subject", "feature_code", "period_start", "used", "reserved", "seq"
        )
    }
    out = {}
    for code, subject, start in wanted:
        used, reserved, seq = found.get((subject, code, start), (0, 0, 0))
        out[code] = (start, used, reserved, seq)
    return out
