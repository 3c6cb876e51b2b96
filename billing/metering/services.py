"""Writes of metered billing: record a closed window's usage, send it to Stripe once, reconcile.

The usage app calls `meter_report_record` for each (customer, meter event name, closed window)
and the beat job sends what is pending. Delivery is at-least-once on our side and exactly-once at
Stripe: the meter event's `identifier` is derived from the row's key and stored when the row is
created, so every send of a row (a retry, a rerun after a crash between Stripe's answer and our
mark) names the same event, and Stripe keeps the first ("already exists" counts as delivered).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from billing.metering.models import (
    EVENT_NAME_MAX_LENGTH,
    MeterReconciliation,
    MeterReconciliationLine,
    MeterReport,
    StripeMeter,
)
from billing.stripe import gateway as stripe_gateway
from payments_project.accounts.services import audit_record
from payments_project.errors import Conflict, DomainError, constraint_name

logger = logging.getLogger(__name__)

# Stripe takes a meter event at most 35 days after its timestamp; a report older than that can
# no longer be billed and is refused at once rather than sent.
STRIPE_MAX_EVENT_AGE = timedelta(days=35)
# Values beyond what a JSON number (and Stripe's float aggregation) holds exactly.
MAX_VALUE = 2**53 - 1
_ID_MAX_LENGTH = 255


class MeteringError(DomainError):
    code = "invalid_meter_report"


def _refuse_text(value: str, name: str, max_length: int) -> None:
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise MeteringError(f"{name} must be 1 to {max_length} characters.", fields={name: []})
    if not value.isprintable() or value != value.strip():
        raise MeteringError(f"{name} holds characters that are not allowed.", fields={name: []})


def _aware_utc(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime) or timezone.is_naive(value):
        raise MeteringError(f"{name} must be an aware datetime.")
    return value.astimezone(UTC)


def meter_identifier(*, stripe_customer_id: str, event_name: str, window_start: datetime) -> str:
    """Stripe's identifier of the meter event for one (customer, event name, window): the same
    inputs always give the same identifier (at most 100 characters, Stripe's limit)."""
    key = f"{stripe_customer_id}\x1f{event_name}\x1f{window_start.astimezone(UTC).isoformat()}"
    return "mr_" + hashlib.sha256(key.encode()).hexdigest()[:40]


def meter_window(*, at: datetime) -> tuple[datetime, datetime]:
    """The window of METERING_WINDOW_SECONDS (aligned on the Unix epoch, UTC) that holds `at`."""
    length = settings.METERING_WINDOW_SECONDS
    seconds = int(_aware_utc(at, "at").timestamp())
    start = seconds - seconds % length
    return datetime.fromtimestamp(start, tz=UTC), datetime.fromtimestamp(start + length, tz=UTC)


def meter_report_record(
    *,
    stripe_customer_id: str,
    event_name: str,
    window_start: datetime,
    window_end: datetime,
    value: int,
    subscription_stripe_id: str | None = None,
) -> MeterReport:
    """The report for one customer, meter event name and closed window, created once.

    Recording the same window again returns the first row; the same window with another value is a
    409 (a closed window's total does not change). The send happens after commit (and from the beat
    job if that is lost)."""
    _refuse_text(stripe_customer_id, "stripe_customer_id", _ID_MAX_LENGTH)
    _refuse_text(event_name, "event_name", EVENT_NAME_MAX_LENGTH)
    if subscription_stripe_id is not None:
        _refuse_text(subscription_stripe_id, "subscription_stripe_id", _ID_MAX_LENGTH)
    start = _aware_utc(window_start, "window_start")
    end = _aware_utc(window_end, "window_end")
    if end <= start:
        raise MeteringError("window_end must be after window_start.")
    if end > timezone.now():
        raise MeteringError("Only a closed window is reported: window_end is in the future.")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_VALUE:
        raise MeteringError(f"value must be an integer from 0 to {MAX_VALUE}.", fields={"value": []})
    identifier = meter_identifier(
        stripe_customer_id=stripe_customer_id, event_name=event_name, window_start=start
    )
    try:
        with transaction.atomic():
            report = MeterReport.objects.create(
                stripe_customer_id=stripe_customer_id,
                event_name=event_name,
                window_start=start,
                window_end=end,
                value=value,
                subscription_stripe_id=subscription_stripe_id or "",
                identifier=identifier,
            )
    except IntegrityError as exc:
        if constraint_name(exc) not in ("meterreport_one_per_window", "billing_meterreport_identifier_key"):
            raise
        report = MeterReport.objects.get(
            stripe_customer_id=stripe_customer_id, event_name=event_name, window_start=start
        )
        if report.value != value or report.window_end != end:
            raise Conflict(
                "This window was already reported with another value or end.",
                code="meter_report_conflict",
                extra={"identifier": report.identifier},
            ) from None
        return report
    transaction.on_commit(lambda: _enqueue_send(report.pk))
    return report


SEND_TASK = "billing.metering.tasks.meter_report_send_task"


def _enqueue_send(report_id: int) -> None:
    try:
        current_app.signature(SEND_TASK, args=(report_id,)).delay()
    except Exception:  # the beat job sends it: a broker outage loses nothing
        logger.warning("meter report %s not queued; the beat job will send it", report_id, exc_info=True)


def _timestamp(report: MeterReport) -> int:
    # The last second of the window: inside [start, end), so Stripe's summaries and invoices put
    # the usage in the same window and billing period as ours.
    return int(report.window_end.timestamp()) - 1


def _mark_sent(report: MeterReport, *, already_existed: bool) -> None:
    MeterReport.objects.filter(pk=report.pk, status=MeterReport.Status.PENDING).update(
        status=MeterReport.Status.SENT,
        sent_at=timezone.now(),
        already_existed=already_existed,
        last_error="",
    )


def meter_report_send(*, report_id: int) -> MeterReport:
    """Send one pending report to Stripe (outside any transaction or row lock) and mark it sent.

    A crash after Stripe's answer and before the mark leaves the row pending: the next send names
    the same identifier and Stripe's "already exists" marks it sent. Stripe refusing the event
    (e.g. older than 35 days) marks it refused; an outage leaves it pending for the beat job."""
    report = MeterReport.objects.get(pk=report_id)
    if report.status != MeterReport.Status.PENDING:
        return report
    now = timezone.now()
    claimed = MeterReport.objects.filter(pk=report.pk, status=MeterReport.Status.PENDING).update(
        attempts=F("attempts") + 1, last_attempt_at=now
    )
    if not claimed:
        report.refresh_from_db()
        return report
    if report.window_end - timedelta(seconds=1) < now - STRIPE_MAX_EVENT_AGE:
        _mark_refused(report, "Older than Stripe's 35 days for meter events: not billable any more.")
        report.refresh_from_db()
        return report
    try:
        result = stripe_gateway.meter_event_create(
            event_name=report.event_name,
            stripe_customer_id=report.stripe_customer_id,
            value=report.value,
            timestamp=_timestamp(report),
            identifier=report.identifier,
        )
    except stripe_gateway.StripeUnavailable as exc:
        MeterReport.objects.filter(pk=report.pk).update(last_error=exc.message[:1000])
        raise
    except DomainError as exc:
        if exc.code != "stripe_invalid_request":
            raise
        _mark_refused(report, exc.message)
    else:
        _mark_sent(report, already_existed=result.already_existed)
    report.refresh_from_db()
    return report


def _mark_refused(report: MeterReport, message: str) -> None:
    logger.warning("meter report %s refused: %s", report.pk, message)
    MeterReport.objects.filter(pk=report.pk, status=MeterReport.Status.PENDING).update(
        status=MeterReport.Status.REFUSED, last_error=message[:1000]
    )


def meter_reports_send_pending(*, limit: int = 500) -> int:
    """Beat job: send the pending reports, oldest windows first; returns how many were sent now.

    Idempotent: a report another worker sends at the same time goes out with the same identifier."""
    sent = 0
    ids = list(
        MeterReport.objects.filter(status=MeterReport.Status.PENDING)
        .order_by("window_end", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    for report_id in ids:
        try:
            report = meter_report_send(report_id=report_id)
        except stripe_gateway.StripeUnavailable:
            break  # Stripe is down: the next run tries again
        sent += report.status == MeterReport.Status.SENT
    return sent


# --- meters --------------------------------------------------------------------------------------


def stripe_meter_ensure(*, event_name: str, display_name: str = "") -> StripeMeter:
    """Our row for Stripe's meter of `event_name`, creating the meter in Stripe if it has none."""
    existing = StripeMeter.objects.filter(event_name=event_name).first()
    if existing is not None:
        return existing
    meter_id = stripe_gateway.meter_find(event_name=event_name)
    if meter_id is None:
        meter_id = stripe_gateway.meter_create(event_name=event_name, display_name=display_name or event_name)
    row, _ = StripeMeter.objects.get_or_create(event_name=event_name, defaults={"stripe_meter_id": meter_id})
    return row


def _meter_id(event_name: str) -> str | None:
    row = StripeMeter.objects.filter(event_name=event_name).first()
    if row is not None:
        return row.stripe_meter_id
    meter_id = stripe_gateway.meter_find(event_name=event_name)
    if meter_id is not None:
        StripeMeter.objects.get_or_create(event_name=event_name, defaults={"stripe_meter_id": meter_id})
    return meter_id


# --- reconciliation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReconcileLine:
    stripe_customer_id: str
    event_name: str
    ours: int
    stripe: int | None  # None: Stripe has no meter for this event name


def _minute_aligned(value: datetime, name: str) -> int:
    seconds = int(_aware_utc(value, name).timestamp())
    if seconds % 60 or value.microsecond:
        raise MeteringError(f"{name} must be on a minute boundary (Stripe's summaries are per minute).")
    return seconds


def meter_reconcile(
    *, start: datetime, end: datetime, ours: Mapping[tuple[str, str], int]
) -> MeterReconciliation:
    """Compare `ours` ({(stripe_customer_id, event_name): our total in [start, end)}) with Stripe's
    meter event summaries for each pair, plus every pair we reported in that range, and store the
    result (one line per pair, with Stripe's total minus ours)."""
    start_time = _minute_aligned(start, "start")
    end_time = _minute_aligned(end, "end")
    if end_time <= start_time:
        raise MeteringError("end must be after start.")
    pairs = dict(ours)
    reported = MeterReport.objects.filter(window_end__gt=start, window_end__lte=end).values_list(
        "stripe_customer_id", "event_name"
    )
    for pair in reported.distinct():
        pairs.setdefault(pair, 0)
    lines: list[ReconcileLine] = []
    meters: dict[str, str | None] = {}
    for (customer, event_name), total in sorted(pairs.items()):
        if event_name not in meters:
            meters[event_name] = _meter_id(event_name)
        meter_id = meters[event_name]
        theirs = (
            None
            if meter_id is None
            else stripe_gateway.meter_event_summary_total(
                meter_id=meter_id, stripe_customer_id=customer, start_time=start_time, end_time=end_time
            )
        )
        lines.append(ReconcileLine(customer, event_name, int(total), theirs))
    with transaction.atomic():
        reconciliation = MeterReconciliation.objects.create(
            start=start,
            end=end,
            lines_count=len(lines),
            differences=sum(1 for line in lines if (line.stripe or 0) != line.ours),
        )
        MeterReconciliationLine.objects.bulk_create(
            MeterReconciliationLine(
                reconciliation=reconciliation,
                stripe_customer_id=line.stripe_customer_id,
                event_name=line.event_name,
                ours=line.ours,
                stripe=line.stripe,
                difference=(line.stripe or 0) - line.ours,
            )
            for line in lines
        )
    return reconciliation


def meter_reports_send_now(*, report_ids: list[int], actor: object) -> int:
    """Staff's "send now" (admin): send the selected pending reports, each audited with its outcome.
    Returns how many are sent; Stripe being down stops at the first failure (the beat job retries)."""
    sent = 0
    for report_id in report_ids:
        report = MeterReport.objects.get(pk=report_id)
        if report.status != MeterReport.Status.PENDING:
            continue
        try:
            report = meter_report_send(report_id=report_id)
        finally:
            report.refresh_from_db()
            audit_record(
                actor=actor,
                action="meter_report_send",
                target=report,
                data={"identifier": report.identifier, "status": report.status, "attempts": report.attempts},
            )
        sent += report.status == MeterReport.Status.SENT
    return sent
