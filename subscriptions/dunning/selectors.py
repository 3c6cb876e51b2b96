"""Reads of dunning: which policy applies, the schedule a policy gives (the sweep and the admin's
preview use the same functions), the caller's open case, the decline rule for a decline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Case, Count, IntegerField, OuterRef, Q, Subquery, Value, When

from billing.models import Plan
from subscriptions.dunning.models import OPEN_STAGES, DeclineRule, DunningAttempt, DunningCase, DunningPolicy

Action = DeclineRule.Action


def dunning_policy_for(*, plan: Plan | None) -> DunningPolicy:
    """The plan's own policy, else the default one (seeded by migration 0008)."""
    if plan is not None:
        policy = DunningPolicy.objects.filter(plan=plan).first()
        if policy is not None:
            return policy
    default = DunningPolicy.objects.filter(is_default=True).first()
    if default is None:  # seeded by migration 0008; made again if someone deleted it
        default, _ = DunningPolicy.objects.get_or_create(is_default=True, defaults=DEFAULT_POLICY)
    return default


# The seeded default (migration 0008 writes the same values).
DEFAULT_POLICY: dict[str, Any] = {
    "name": "Default",
    "retry_offsets_days": [1, 3, 5, 7],
    "past_due_access": "full",
    "suspend_after_failed_retries": 3,
    "cancel_after_days": 14,
    "invoice_end": "void",
}


def past_due_kept_features(*, subscription: Any) -> frozenset[str] | None:
    """Features that stay usable while the subscription is past due; None: all of them (full)."""
    policy = dunning_policy_for(plan=subscription.plan)
    if policy.past_due_access == DunningPolicy.Access.FULL:
        return None
    if policy.past_due_access == DunningPolicy.Access.FEATURES:
        return frozenset(policy.past_due_features)
    return frozenset()


def retry_due_times(*, offsets_days: list[int], opened_at: datetime) -> list[datetime]:
    """When each automatic retry is due: whole days after the failed renewal, same time of day (UTC).

    Aware UTC datetimes plus whole days: a month end or 29 February is just another day."""
    return [opened_at + timedelta(days=int(days)) for days in offsets_days]


def cancel_due_at(*, policy: DunningPolicy, opened_at: datetime, grace_days: int = 0) -> datetime:
    return opened_at + timedelta(days=int(policy.cancel_after_days) + int(grace_days))


def suspends_after(*, policy: DunningPolicy) -> int:
    """How many failed automatic retries suspend the subscription (no retry left suspends too)."""
    return min(int(policy.suspend_after_failed_retries), len(policy.retry_offsets_days))


@dataclass(frozen=True)
class TimelineStep:
    day: int
    at: datetime
    what: str


def dunning_timeline(*, policy: DunningPolicy, opened_at: datetime) -> list[TimelineStep]:
    """What a customer whose card keeps failing lives through under `policy`: the emails, each
    retry, the suspension and the cancellation, by day. The sweep schedules with the same functions."""
    steps = [
        TimelineStep(
            0, opened_at, "renewal fails: past due, 'payment failed' email with the update-card link"
        )
    ]
    retries = retry_due_times(offsets_days=list(policy.retry_offsets_days), opened_at=opened_at)
    suspend_after = suspends_after(policy=policy)
    if suspend_after == 0:
        steps.append(TimelineStep(0, opened_at, "suspended at once: 'suspended' email"))
    for number, at in enumerate(retries, start=1):
        day = (at - opened_at).days
        if number == suspend_after:
            steps.append(TimelineStep(day, at, f"retry {number} fails: suspended, 'suspended' email"))
        else:
            steps.append(TimelineStep(day, at, f"retry {number} fails: 'retry failed' email"))
    cancel_at = cancel_due_at(policy=policy, opened_at=opened_at)
    end = "voided" if policy.invoice_end == DunningPolicy.InvoiceEnd.VOID else "marked uncollectible"
    steps.append(
        TimelineStep(
            policy.cancel_after_days,
            cancel_at,
            f"cancelled in Stripe, invoice {end}, access revoked: 'cancelled' email",
        )
    )
    return sorted(steps, key=lambda step: step.at)


def decline_action(*, decline_code: str, advice_code: str, network_advice_code: str) -> tuple[str, int]:
    """(action, not_before_hours) for a decline: the strictest matching rule wins (never, then the
    longest wait); no rule matches: retry on schedule."""
    if not (decline_code or advice_code or network_advice_code):
        return Action.RETRY, 0
    rules = DeclineRule.objects.filter(
        Q(decline_code__in=["", decline_code])
        & Q(advice_code__in=["", advice_code])
        & Q(network_advice_code__in=["", network_advice_code])
    )
    action, hours = Action.RETRY, 0
    for rule in rules:
        if rule.action == Action.NEVER:
            return Action.NEVER, 0
        if rule.action == Action.NOT_BEFORE:
            action, hours = Action.NOT_BEFORE, max(hours, int(rule.not_before_hours or 0))
    return action, hours


def open_case_for_user(*, user_id: int) -> DunningCase | None:
    return (
        DunningCase.objects.select_related("subscription__plan", "policy")
        .filter(subscription__user_id=user_id, stage__in=OPEN_STAGES)
        .order_by("-opened_at")
        .first()
    )


def next_retry_at(*, case: DunningCase) -> datetime | None:
    attempt = (
        case.attempts.filter(status=DunningAttempt.Status.SCHEDULED).order_by("due_at").only("due_at").first()
    )
    return None if attempt is None or case.paused else attempt.due_at


def what_to_do(*, case: DunningCase) -> str:
    if case.needs_new_card:
        return "update_card"  # retries stopped: only a new card (or paying) helps
    return "update_card_or_wait"


def case_timeline(*, case: DunningCase) -> list[dict[str, Any]]:
    """The admin's timeline of one case: attempts and emails, oldest first."""
    rows: list[dict[str, Any]] = []
    for attempt in case.attempts.all():
        codes = "/".join(
            c for c in (attempt.decline_code, attempt.advice_code, attempt.network_advice_code) if c
        )
        rows.append(
            {
                "at": attempt.finished_at or attempt.due_at,
                "what": f"attempt {attempt.number} ({attempt.get_kind_display()}): "
                f"{attempt.get_status_display()}",
                "detail": " ".join(x for x in (codes, attempt.outcome) if x),
            }
        )
    for email in case.emails.all():
        rows.append(
            {
                "at": email.sent_at or email.created_at,
                "what": f"email {email.step}" + ("" if email.sent_at else " (not sent yet)"),
                "detail": email.subject,
            }
        )
    return sorted(rows, key=lambda row: row["at"])


FINISHED_ATTEMPTS = (DunningAttempt.Status.SUCCEEDED, DunningAttempt.Status.FAILED)


def dunning_cases_for_user(*, user_id: int, limit: int = 50) -> list[DunningCase]:
    """A customer's dunning cases, open ones first, then the newest (one query). Each case
    carries `attempts_run` (attempts that reached Stripe), `attempts_total` and `next_retry`
    (the next scheduled retry; None when the case is closed or paused, as next_retry_at says)."""
    next_due = DunningAttempt.objects.filter(
        case=OuterRef("pk"), status=DunningAttempt.Status.SCHEDULED
    ).order_by("due_at")
    cases: list[DunningCase] = list(
        DunningCase.objects.filter(subscription__user_id=user_id)
        .select_related("subscription__plan")
        .annotate(
            open_first=Case(
                When(stage__in=OPEN_STAGES, then=Value(0)), default=Value(1), output_field=IntegerField()
            ),
            scheduled_retry=Subquery(next_due.values("due_at")[:1]),
            attempts_run=Count("attempts", filter=Q(attempts__status__in=FINISHED_ATTEMPTS)),
            attempts_total=Count("attempts"),
        )
        .order_by("open_first", "-opened_at", "-pk")[:limit]
    )
    for case in cases:
        scheduled = getattr(case, "scheduled_retry", None)
        case.next_retry = scheduled if case.is_open and not case.paused else None  # type: ignore[attr-defined]
    return cases
