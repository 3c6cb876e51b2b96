"""Metered billing against the Stripe stand-in, through our gateway and the official SDK."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import pytest

from billing.metering.models import MeterReport
from billing.metering.services import (
    MeteringError,
    meter_reconcile,
    meter_report_record,
    meter_report_send,
    meter_reports_send_pending,
    meter_window,
    stripe_meter_ensure,
)
from billing.metering.tasks import meter_reports_send_task
from billing.stripe import gateway as stripe_gateway
from payments_project.errors import Conflict

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)


class Crash(Exception):
    """Stands for the worker dying between Stripe's answer and our mark."""


@pytest.fixture
def sdk_requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, list[str]]]]:
    """Every HTTP request the SDK sends through our gateway's transport: (method, path, form)."""
    sent: list[tuple[str, str, dict[str, list[str]]]] = []
    plain = stripe_gateway.BudgetedRequestsClient.request

    def recording(self: Any, method: str, url: str, headers: Any, post_data: Any = None) -> Any:
        path = url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
        sent.append((method.upper(), "/" + path, parse_qs(post_data or "")))
        return plain(self, method, url, headers, post_data)

    monkeypatch.setattr(stripe_gateway.BudgetedRequestsClient, "request", recording)
    return sent


@pytest.fixture
def customer(stripe_standin: Any) -> str:
    return str(stripe_gateway.client().v1.customers.create({"email": "ada@example.com"}).id)


@pytest.fixture
def meter(stripe_standin: Any) -> str:
    return stripe_meter_ensure(event_name="api_calls", display_name="API calls").stripe_meter_id


def _hours_ago(n: int) -> datetime:
    start, _ = meter_window(at=datetime.now(UTC))
    return start - n * HOUR


def _record(customer: str, start: datetime, value: int, event_name: str = "api_calls") -> MeterReport:
    return meter_report_record(
        stripe_customer_id=customer,
        event_name=event_name,
        window_start=start,
        window_end=start + HOUR,
        value=value,
        subscription_stripe_id="sub_123",
    )


def _meter_events(sent: list[tuple[str, str, dict[str, list[str]]]]) -> list[str]:
    return [form["identifier"][0] for method, path, form in sent if path == "/v1/billing/meter_events"]


def _stripe_total(meter_id: str, customer: str, start: datetime, end: datetime) -> int:
    return stripe_gateway.meter_event_summary_total(
        meter_id=meter_id,
        stripe_customer_id=customer,
        start_time=int(start.timestamp()),
        end_time=int(end.timestamp()),
    )


# --- record ---------------------------------------------------------------------------------------


def test_record_fixes_the_identifier_before_any_send() -> None:
    # when
    report = _record("cus_A", _hours_ago(2), 42)
    # then
    assert report.status == MeterReport.Status.PENDING
    assert report.attempts == 0
    assert report.identifier.startswith("mr_")
    assert len(report.identifier) == 43
    assert report.subscription_stripe_id == "sub_123"
    assert MeterReport.objects.get().identifier == report.identifier


def test_recording_the_same_window_again_returns_the_first_row() -> None:
    first = _record("cus_A", _hours_ago(2), 42)
    again = _record("cus_A", _hours_ago(2), 42)
    assert again.pk == first.pk
    assert again.identifier == first.identifier
    assert MeterReport.objects.count() == 1


def test_the_same_window_with_another_value_is_a_conflict() -> None:
    first = _record("cus_A", _hours_ago(2), 42)
    with pytest.raises(Conflict) as caught:
        _record("cus_A", _hours_ago(2), 43)
    assert caught.value.code == "meter_report_conflict"
    assert caught.value.extra == {"identifier": first.identifier}
    assert MeterReport.objects.get().value == 42


def test_identifiers_differ_per_customer_meter_and_window() -> None:
    reports = [
        _record("cus_A", _hours_ago(2), 1),
        _record("cus_B", _hours_ago(2), 1),
        _record("cus_A", _hours_ago(3), 1),
        _record("cus_A", _hours_ago(2), 1, event_name="storage_gb"),
    ]
    assert len({r.identifier for r in reports}) == 4


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"window_start": datetime(2026, 1, 1, 10)}, "window_start must be an aware datetime."),
        ({"value": -1}, "value must be an integer from 0 to 9007199254740991."),
        ({"value": True}, "value must be an integer from 0 to 9007199254740991."),
        ({"value": 2**53}, "value must be an integer from 0 to 9007199254740991."),
        ({"event_name": "api\x00calls"}, "event_name holds characters that are not allowed."),
        ({"event_name": "e" * 101}, "event_name must be 1 to 100 characters."),
        ({"stripe_customer_id": ""}, "stripe_customer_id must be 1 to 255 characters."),
        ({"window_end": "start"}, "window_end must be after window_start."),
        ({"window_end": "future"}, "Only a closed window is reported: window_end is in the future."),
    ],
    ids=["naive", "negative", "bool", "too_big", "nul", "long_name", "no_customer", "empty", "open"],
)
def test_bad_reports_are_refused_and_nothing_is_written(changes: dict[str, Any], message: str) -> None:
    start = _hours_ago(2)
    params: dict[str, Any] = {
        "stripe_customer_id": "cus_A",
        "event_name": "api_calls",
        "window_start": start,
        "window_end": start + HOUR,
        "value": 1,
        **changes,
    }
    if params["window_end"] == "start":
        params["window_end"] = start
    if params["window_end"] == "future":
        params["window_start"], params["window_end"] = _hours_ago(0), _hours_ago(-1)
    with pytest.raises(MeteringError) as caught:
        meter_report_record(**params)
    assert caught.value.message == message
    assert MeterReport.objects.count() == 0


# --- send -----------------------------------------------------------------------------------------


def test_send_delivers_one_meter_event_and_marks_the_report(
    customer: str, meter: str, sdk_requests: list
) -> None:
    # given
    start = _hours_ago(3)
    report = _record(customer, start, 42)
    # when
    sent = meter_report_send(report_id=report.pk)
    # then
    assert sent.status == MeterReport.Status.SENT
    assert sent.attempts == 1
    assert sent.already_existed is False
    assert sent.sent_at is not None
    assert _meter_events(sdk_requests) == [report.identifier]
    form = next(f for _, p, f in sdk_requests if p == "/v1/billing/meter_events")
    assert form["event_name"] == ["api_calls"]
    assert form["payload[stripe_customer_id]"] == [customer]
    assert form["payload[value]"] == ["42"]
    assert form["timestamp"] == [str(int((start + HOUR).timestamp()) - 1)]
    assert _stripe_total(meter, customer, start, start + HOUR) == 42


def test_a_crash_between_stripes_answer_and_the_mark_resends_the_same_identifier(
    customer: str, meter: str, sdk_requests: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a worker that dies after Stripe answered, before it marked the report
    start = _hours_ago(3)
    report = _record(customer, start, 42)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash

    with monkeypatch.context() as patched:
        patched.setattr("billing.metering.services._mark_sent", crash)
        with pytest.raises(Crash):
            meter_report_send(report_id=report.pk)
    assert MeterReport.objects.get(pk=report.pk).status == MeterReport.Status.PENDING
    # when the beat job runs again
    assert meter_reports_send_pending() == 1
    # then the SDK sent the same identifier twice and Stripe counted it once
    assert _meter_events(sdk_requests) == [report.identifier, report.identifier]
    done = MeterReport.objects.get(pk=report.pk)
    assert done.status == MeterReport.Status.SENT
    assert done.attempts == 2
    assert _stripe_total(meter, customer, start, start + HOUR) == 42


def test_stripes_already_exists_answer_counts_as_delivered(
    customer: str, meter: str, sdk_requests: list
) -> None:
    # given Stripe already holds the event (sent by an earlier run, its replay cache gone)
    start = _hours_ago(3)
    report = _record(customer, start, 42)
    stripe_gateway.client().v1.billing.meter_events.create(
        {
            "event_name": "api_calls",
            "identifier": report.identifier,
            "timestamp": int(start.timestamp()),
            "payload": {"stripe_customer_id": customer, "value": "42"},
        }
    )
    # when
    sent = meter_report_send(report_id=report.pk)
    # then
    assert sent.status == MeterReport.Status.SENT
    assert sent.already_existed is True
    assert _meter_events(sdk_requests) == [report.identifier, report.identifier]
    assert _stripe_total(meter, customer, start, start + HOUR) == 42


def test_a_sent_report_is_not_sent_again(customer: str, meter: str, sdk_requests: list) -> None:
    report = _record(customer, _hours_ago(3), 5)
    meter_report_send(report_id=report.pk)
    again = meter_report_send(report_id=report.pk)
    assert again.attempts == 1
    assert meter_reports_send_task.delay().get() == 0
    assert _meter_events(sdk_requests) == [report.identifier]


def test_the_beat_task_sends_every_pending_report_once(customer: str, meter: str, sdk_requests: list) -> None:
    # given
    reports = [_record(customer, _hours_ago(n), n) for n in (4, 3, 2)]
    # when
    first = meter_reports_send_task.delay().get()
    second = meter_reports_send_task.delay().get()
    # then
    assert (first, second) == (3, 0)
    assert _meter_events(sdk_requests) == [r.identifier for r in reports]
    assert _stripe_total(meter, customer, _hours_ago(4), _hours_ago(1)) == 4 + 3 + 2


def test_a_report_stripe_refuses_is_marked_refused_and_not_retried(
    customer: str, meter: str, sdk_requests: list
) -> None:
    # given a meter event name Stripe has no meter for
    report = _record(customer, _hours_ago(3), 5, event_name="no_such_meter")
    # when
    refused = meter_report_send(report_id=report.pk)
    # then
    assert refused.status == MeterReport.Status.REFUSED
    assert refused.last_error == "No active meter was found for event_name `no_such_meter`."
    assert meter_reports_send_pending() == 0
    assert len(_meter_events(sdk_requests)) == 1


def test_a_window_older_than_stripes_35_days_is_refused_without_a_call(
    customer: str, meter: str, sdk_requests: list
) -> None:
    report = _record(customer, _hours_ago(36 * 24), 5)
    refused = meter_report_send(report_id=report.pk)
    assert refused.status == MeterReport.Status.REFUSED
    assert refused.last_error == "Older than Stripe's 35 days for meter events: not billable any more."
    assert _meter_events(sdk_requests) == []


def test_stripe_down_leaves_the_report_pending(
    stripe_standin: Any, settings: Any, sdk_requests: list
) -> None:
    # given Stripe unreachable
    report = _record("cus_A", _hours_ago(3), 5)
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    stripe_gateway.client.cache_clear()
    # when
    with pytest.raises(stripe_gateway.StripeUnavailable):
        meter_report_send(report_id=report.pk)
    assert meter_reports_send_pending() == 0
    # then
    pending = MeterReport.objects.get(pk=report.pk)
    assert pending.status == MeterReport.Status.PENDING
    assert pending.attempts == 2
    assert pending.last_error == "Stripe did not answer; try again shortly."
    assert _meter_events(sdk_requests) == [report.identifier, report.identifier]


# --- reconcile ------------------------------------------------------------------------------------


@pytest.fixture
def two_customers_reported(customer: str, meter: str) -> Iterator[tuple[str, str, list[MeterReport]]]:
    other = str(stripe_gateway.client().v1.customers.create({}).id)
    reports = [
        _record(customer, _hours_ago(3), 7),
        _record(customer, _hours_ago(2), 11),
        _record(other, _hours_ago(2), 5),
    ]
    yield customer, other, reports


def test_reconcile_reports_zero_drift_on_a_clean_run(two_customers_reported: Any) -> None:
    # given every report sent
    customer, other, _ = two_customers_reported
    meter_reports_send_pending()
    # when
    result = meter_reconcile(
        start=_hours_ago(3), end=_hours_ago(1), ours={(customer, "api_calls"): 18, (other, "api_calls"): 5}
    )
    # then
    assert (result.lines_count, result.differences) == (2, 0)
    assert sorted(result.lines.values_list("stripe_customer_id", "ours", "stripe", "difference")) == sorted(
        [(customer, 18, 18, 0), (other, 5, 5, 0)]
    )


def test_reconcile_shows_the_exact_difference_when_a_report_is_missing(two_customers_reported: Any) -> None:
    # given one report never sent (lost before it reached Stripe)
    customer, other, reports = two_customers_reported
    for report in reports[:2]:
        meter_report_send(report_id=report.pk)
    # when
    result = meter_reconcile(
        start=_hours_ago(3), end=_hours_ago(1), ours={(customer, "api_calls"): 18, (other, "api_calls"): 5}
    )
    # then
    assert (result.lines_count, result.differences) == (2, 1)
    line = result.lines.get(stripe_customer_id=other)
    assert (line.ours, line.stripe, line.difference) == (5, 0, -5)


def test_reconcile_lists_a_reported_pair_that_ours_lacks(two_customers_reported: Any) -> None:
    customer, other, _ = two_customers_reported
    meter_reports_send_pending()
    result = meter_reconcile(start=_hours_ago(3), end=_hours_ago(1), ours={(customer, "api_calls"): 18})
    line = result.lines.get(stripe_customer_id=other)
    assert (line.ours, line.stripe, line.difference) == (0, 5, 5)
    assert result.differences == 1


def test_reconcile_of_a_meter_stripe_lacks_has_no_stripe_total(customer: str, meter: str) -> None:
    result = meter_reconcile(start=_hours_ago(3), end=_hours_ago(1), ours={(customer, "unknown_meter"): 4})
    line = result.lines.get()
    assert (line.event_name, line.ours, line.stripe, line.difference) == ("unknown_meter", 4, None, -4)


def test_reconcile_needs_minute_aligned_bounds(stripe_standin: Any) -> None:
    with pytest.raises(MeteringError) as caught:
        meter_reconcile(start=_hours_ago(3) + timedelta(seconds=30), end=_hours_ago(1), ours={})
    assert caught.value.message == "start must be on a minute boundary (Stripe's summaries are per minute)."


def test_meter_window_is_aligned_on_the_setting(settings: Any) -> None:
    settings.METERING_WINDOW_SECONDS = 900
    assert meter_window(at=datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC)) == (
        datetime(2026, 2, 28, 23, 45, tzinfo=UTC),
        datetime(2026, 3, 1, 0, 0, tzinfo=UTC),
    )


def test_stripe_meter_ensure_creates_the_meter_once(stripe_standin: Any, sdk_requests: list) -> None:
    first = stripe_meter_ensure(event_name="storage_gb", display_name="Storage")
    again = stripe_meter_ensure(event_name="storage_gb", display_name="Storage")
    assert first.pk == again.pk
    assert first.stripe_meter_id.startswith("mtr_")
    assert [p for m, p, _ in sdk_requests if m == "POST"] == ["/v1/billing/meters"]


def test_a_recorded_report_is_sent_after_commit(
    customer: str, meter: str, django_capture_on_commit_callbacks: Any
) -> None:
    # when (tasks run eagerly in tests)
    with django_capture_on_commit_callbacks(execute=True):
        report = _record(customer, _hours_ago(3), 6)
    # then
    report.refresh_from_db()
    assert (report.status, report.attempts) == (MeterReport.Status.SENT, 1)
