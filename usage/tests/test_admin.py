from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from payments_project.accounts.models import AuditLogEntry
from payments_project.accounts.tests.factories import UserFactory
from usage.models import UsageAdjustment, UsageCounter, UsageRecord, UsageReservation
from usage.selectors import ledger_sums
from usage.services import UsageEvent, usage_events_record, usage_reservation_create
from usage.tasks import usage_reservations_expire_task

pytestmark = pytest.mark.django_db


def _staff(group: str) -> Client:
    user = UserFactory(is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    client = Client()
    client.force_login(user)
    return client


def _spent(quota: Callable[..., Any], quantity: int) -> UsageCounter:
    user = quota(limit=10)
    usage_events_record(
        events=[UsageEvent(user_id=user.pk, feature="api_calls", idempotency_key="a", quantity=quantity)]
    )
    return UsageCounter.objects.get()


def test_finance_corrects_a_counter_with_a_signed_audited_adjustment(quota: Callable[..., Any]) -> None:
    counter = _spent(quota, 6)
    finance = _staff("finance")

    form = finance.get(f"/admin/usage/usageadjustment/add/?counter_id={counter.pk}")
    response = finance.post(
        "/admin/usage/usageadjustment/add/",
        {"counter_id": counter.pk, "quantity": -4, "reason": "double-counted import"},
    )

    assert form.status_code == 200
    assert response.status_code == 302
    counter.refresh_from_db()
    adjustment = UsageAdjustment.objects.get()
    assert (counter.used, adjustment.quantity, adjustment.reason) == (2, -4, "double-counted import")
    assert counter.used == ledger_sums(
        subject=counter.subject, feature_code="api_calls", period_start=counter.period_start
    )
    assert UsageRecord.objects.get().quantity == 6  # history untouched
    entry = AuditLogEntry.objects.get(action="usage_adjust")
    assert (entry.reason, entry.data["quantity"], entry.subject_user_id) == (
        "double-counted import",
        -4,
        counter.user_id,
    )


def test_an_adjustment_below_zero_or_by_support_is_refused(quota: Callable[..., Any]) -> None:
    counter = _spent(quota, 3)

    too_much = _staff("finance").post(
        "/admin/usage/usageadjustment/add/", {"counter_id": counter.pk, "quantity": -4, "reason": "x"}
    )
    by_support = _staff("support").post(
        "/admin/usage/usageadjustment/add/", {"counter_id": counter.pk, "quantity": 1, "reason": "x"}
    )

    assert too_much.status_code == 200  # the form again, with its error
    assert "The counter would become negative." in too_much.content.decode()
    assert by_support.status_code == 403
    assert UsageAdjustment.objects.count() == 0


def test_records_are_searchable_by_user(quota: Callable[..., Any]) -> None:
    counter = _spent(quota, 3)
    support = _staff("support")

    found = support.get(f"/admin/usage/usagerecord/?q={counter.user.username}")
    counters = support.get(f"/admin/usage/usagecounter/?q={counter.user_id}")

    assert found.status_code == 200 and "1 usage record" in found.content.decode()
    assert counters.status_code == 200 and list(counters.context["cl"].result_list) == [counter]


def test_only_finance_is_offered_the_correction_link(quota: Callable[..., Any]) -> None:
    # given a counter; support may not correct it (the add page would answer 403)
    counter = _spent(quota, 3)
    adjust = f'href="/admin/usage/usageadjustment/add/?counter_id={counter.pk}"'

    # when each role opens the counters list
    pages = {
        role: _staff(role).get("/admin/usage/usagecounter/").content.decode()
        for role in ("support", "finance")
    }

    # then only finance has the Adjust… link
    assert {role: adjust in page for role, page in pages.items()} == {"support": False, "finance": True}


def test_the_correction_form_says_which_counter_and_returns_to_it(quota: Callable[..., Any]) -> None:
    # given a counter at 6 of 10
    counter = _spent(quota, 6)
    finance = _staff("finance")

    # when finance opens the correction form for it and saves -2
    form = finance.get(f"/admin/usage/usageadjustment/add/?counter_id={counter.pk}").content.decode()
    saved = finance.post(
        "/admin/usage/usageadjustment/add/",
        {"counter_id": counter.pk, "quantity": -2, "reason": "test import", "_save": "Save"},
    )

    # then the form named the counter, and saving lands on that counter's list
    assert (
        f'<strong>api_calls</strong> of <a href="/admin/accounts/customer/{counter.user_id}/change/">' in form
    )
    assert ": 6 used of 10, 0 held." in form
    assert saved["Location"] == (
        f"/admin/usage/usagecounter/?subject__exact={counter.subject}&feature_code__exact=api_calls"
    )


def test_the_beat_sweep_releases_expired_holds(quota: Callable[..., Any]) -> None:
    user = quota(limit=10)
    past = timezone.now() - timedelta(hours=1)
    usage_reservation_create(
        user_id=user.pk, feature="api_calls", quantity=7, idempotency_key="h", ttl_seconds=60, now=past
    )
    assert UsageCounter.objects.get().reserved == 7

    expired = usage_reservations_expire_task()

    assert expired == 1
    assert UsageReservation.objects.get().status == UsageReservation.Status.EXPIRED
    assert UsageCounter.objects.get().reserved == 0
    assert settings.CELERY_BEAT_SCHEDULE["usage-reservations-expire"]["task"] == (
        "usage.tasks.usage_reservations_expire_task"
    )


def test_the_counters_list_says_a_limit_that_never_resets_never_resets(quota: Callable[..., Any]) -> None:
    # given a lifetime limit spent once, and a monthly one
    lifetime = quota("projects", limit=3, reset_period="never")
    monthly = quota(limit=10)
    usage_events_record(
        events=[
            UsageEvent(user_id=lifetime.pk, feature="projects", idempotency_key="p"),
            UsageEvent(user_id=monthly.pk, feature="api_calls", idempotency_key="a"),
        ]
    )

    # when support opens the counters
    page = _staff("support").get("/admin/usage/usagecounter/").content.decode()

    # then the lifetime counter's period reads "never resets", not 1970, and the monthly one its start
    assert "never resets" in page
    assert "1970" not in page
    start = UsageCounter.objects.get(feature_code="api_calls").period_start
    assert timezone.localtime(start).strftime("%Y-%m-%d %H:%M") in page
