"""The usage app's domain events: a quota threshold crossed, once per (subject, feature, period, level)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from payments_project.events.envelope import rfc3339
from payments_project.events.registry import event_type, integer, string, timestamp
from payments_project.events.services import event_record
from usage.models import UsageThreshold

USAGE_THRESHOLD_REACHED = event_type(
    name="usage.threshold_reached",
    aggregate="usage_counter",
    description="A subject's use of a feature reached 80% or 100% of its limit, or went past it "
    "(soft policy or overage allowance), for the first time in the period.",
    properties={
        "counter_id": integer("Our usage counter id (the aggregate id).", minimum=1),
        "subject": string("The quota's holder: u<user id> or f<family id> (a family pool).", max_length=32),
        "user_id": integer("The holder, when a user holds the quota.", minimum=1, nullable=True),
        "family_id": integer("The holder, when a family pool holds it.", minimum=1, nullable=True),
        "feature": string("Feature code.", max_length=64),
        "period_start": timestamp(
            "Start of the counter's period (1970-01-01 for a limit that never resets)."
        ),
        "level": string("Which threshold.", enum=list(UsageThreshold.Level.values)),
        "limit": integer("The period's limit."),
        "used": integer("Units used once the threshold was crossed."),
    },
)

# (counter key (subject, feature, period start), counter id, limit, used before, used after)
Crossing = tuple[tuple[str, str, datetime], int, int, int, int]


def _aware(value: object) -> datetime:
    if isinstance(value, datetime):  # SQLite gives it back naive (in UTC) or as text
        return value if timezone.is_aware(value) else timezone.make_aware(value, UTC)
    parsed = parse_datetime(str(value))
    assert parsed is not None
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)


def _levels(limit: int, before: int, after: int) -> list[str]:
    levels: list[str] = []
    # 80%: used * 100 >= 80 * limit, in integers.
    if before * 100 < 80 * limit <= after * 100:
        levels.append(UsageThreshold.Level.WARNING)
    if before < limit <= after:
        levels.append(UsageThreshold.Level.REACHED)
    if before <= limit < after:
        levels.append(UsageThreshold.Level.OVERAGE)
    return levels


def thresholds_record(*, crossings: Sequence[Crossing], now: datetime) -> None:
    """Record the thresholds crossed (INSERT ... ON CONFLICT DO NOTHING RETURNING: the unique key
    decides which are new) and one domain event for each new one, in the caller's transaction."""
    rows = []
    for (subject, code, start), counter_id, limit, before, after in crossings:
        for level in _levels(limit, before, after):
            rows.append((subject, code, start, level, limit, after, counter_id))
    if not rows:
        return
    table = UsageThreshold._meta.db_table
    params: list[Any] = []
    for subject, code, start, level, limit, after, _ in rows:
        params += [
            subject,
            code,
            connection.ops.adapt_datetimefield_value(start),
            level,
            limit,
            after,
            connection.ops.adapt_datetimefield_value(now),
        ]
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO {table} (subject, feature_code, period_start, level, "limit", used, created_at) '  # noqa: S608 - table names from the models, values as parameters
            f"VALUES {values} ON CONFLICT (subject, feature_code, period_start, level) DO NOTHING "
            "RETURNING subject, feature_code, period_start, level",
            params,
        )
        new = {(subject, code, _aware(start), level) for subject, code, start, level in cursor.fetchall()}
    for subject, code, start, level, limit, after, counter_id in rows:
        if (subject, code, start, level) not in new:
            continue
        holder = int(subject[1:])
        event_record(
            event_type=USAGE_THRESHOLD_REACHED,
            aggregate_id=counter_id,
            payload={
                "counter_id": counter_id,
                "subject": subject,
                "user_id": holder if subject.startswith("u") else None,
                "family_id": holder if subject.startswith("f") else None,
                "feature": code,
                "period_start": rfc3339(start),
                "level": level,
                "limit": limit,
                "used": after,
            },
            occurred_at=now,
        )
