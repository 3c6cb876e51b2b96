"""Metered billing in the staff console: reports by status, the last reconciliation with its lines,
and finance's audited "send now"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from billing.metering.models import MeterReport
from billing.metering.services import meter_report_record, meter_window, stripe_meter_ensure
from billing.metering.tests.factories import (
    MeterReconciliationFactory,
    MeterReconciliationLineFactory,
    MeterReportFactory,
)
from billing.stripe import gateway as stripe_gateway
from payments_project.accounts.models import AuditLogEntry
from payments_project.accounts.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _login(role: str | None) -> tuple[Client, Any]:
    user = UserFactory(username=role or "root", is_staff=True, is_superuser=role is None)
    if role:
        user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client, user


@pytest.mark.parametrize("role", [None, "finance", "support"])
def test_reports_are_listed_and_filtered_by_status(role: str | None) -> None:
    MeterReportFactory(stripe_customer_id="cus_sent", status=MeterReport.Status.SENT)
    pending = MeterReportFactory(stripe_customer_id="cus_pending")
    client, _ = _login(role)
    page = client.get("/admin/billing/meterreport/?status__exact=pending")
    assert page.status_code == 200
    assert list(page.context["cl"].queryset) == [pending]
    assert str(pending.identifier) in page.content.decode()


@pytest.mark.parametrize("role", [None, "finance", "support"])
def test_the_last_reconciliation_is_listed_first_with_its_lines(role: str | None) -> None:
    MeterReconciliationFactory()
    last = MeterReconciliationFactory(differences=1, lines_count=2)
    MeterReconciliationLineFactory(reconciliation=last, stripe_customer_id="cus_ok")
    MeterReconciliationLineFactory(
        reconciliation=last, stripe_customer_id="cus_short", ours=12, stripe=7, difference=-5
    )
    client, _ = _login(role)
    listing = client.get("/admin/billing/meterreconciliation/")
    page = client.get(f"/admin/billing/meterreconciliation/{last.pk}/change/")
    assert listing.context["cl"].queryset.first() == last
    assert page.status_code == 200
    body = page.content.decode()
    assert "cus_short" in body
    assert body.index("cus_short") < body.index("cus_ok")  # differences first


def test_finance_sends_a_pending_report_now_and_it_is_audited(stripe_standin: Any) -> None:
    # given a pending report for a real stand-in customer and meter
    stripe_meter_ensure(event_name="api_calls")
    customer = str(stripe_gateway.client().v1.customers.create({}).id)
    start, _ = meter_window(at=datetime.now(UTC) - timedelta(hours=2))
    report = meter_report_record(
        stripe_customer_id=customer,
        event_name="api_calls",
        window_start=start,
        window_end=start + timedelta(hours=1),
        value=9,
    )
    client, finance = _login("finance")
    # when
    response = client.post(
        "/admin/billing/meterreport/", {"action": "send_now", "_selected_action": [report.pk]}
    )
    # then
    assert response.status_code == 302
    report.refresh_from_db()
    assert report.status == MeterReport.Status.SENT
    entry = AuditLogEntry.objects.get(action="meter_report_send")
    assert (entry.actor_id, entry.target_id) == (finance.pk, str(report.pk))
    assert entry.data == {"identifier": report.identifier, "status": "sent", "attempts": 1}


def test_support_cannot_send_reports() -> None:
    report = MeterReportFactory()
    client, _ = _login("support")
    listing = client.get("/admin/billing/meterreport/")
    client.post("/admin/billing/meterreport/", {"action": "send_now", "_selected_action": [report.pk]})
    assert "send_now" not in listing.content.decode()
    report.refresh_from_db()
    assert (report.status, report.attempts) == (MeterReport.Status.PENDING, 0)
    assert AuditLogEntry.objects.count() == 0
