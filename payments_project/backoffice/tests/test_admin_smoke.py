"""Every page of the staff console, opened as each role on realistic data: none answers 500, and
each answers what the role may do (200), may not (403), or is sent to log in (302).

Pages: the index, each app's index, and for every registered model its list (with and without a
search), add form, a real object's change page, history and delete confirmation; plus every custom
view, which must be listed in CUSTOM_VIEWS below (a new one without an entry fails the test).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.contrib.admin.options import ModelAdmin
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.authtoken.models import Token, TokenProxy

from billing.catalog.tests.factories import MeteredPriceFactory
from billing.metering.tests.factories import (
    MeterReconciliationLineFactory,
    MeterReportFactory,
    StripeMeterFactory,
)
from billing.models import PlanFeature, PricingZone, StripeEvent
from subscriptions.dunning.tests.factories import (
    DeclineRuleFactory,
    DunningAttemptFactory,
    DunningCaseFactory,
    DunningEmailFactory,
    DunningPolicyFactory,
)
from usage.tests.factories import (
    UsageAdjustmentFactory,
    UsageCounterFactory,
    UsageRecordFactory,
    UsageReservationFactory,
    UsageThresholdFactory,
)

ROLES = ["root", "finance", "support"]
STANDARD_VIEWS = {"changelist", "add", "change", "history", "delete"}
SEARCHES = ["alice", "cus_123", "42"]


def _custom_views(w: dict[str, Any]) -> dict[str, tuple[str, dict[str, int]]]:
    """Every custom admin view by URL name: (a URL with real objects, expected status per role)."""
    payment, alice = w["payment"], w["alice"]
    return {
        "billing_payment_refund": (
            reverse("admin:billing_payment_refund", args=[payment.pk]),
            {"root": 200, "finance": 200, "support": 403},
        ),
        # reprocessing is a POST (the event page's button): a GET is refused either way
        "billing_stripeevent_reprocess": (
            reverse("admin:billing_stripeevent_reprocess", args=[StripeEvent.objects.first().pk]),
            {"root": 405, "finance": 405, "support": 403},
        ),
        # the customer page's read-only entitlement check
        "customer page check": (
            f"/admin/accounts/customer/{alice.pk}/change/?feature=export_pdf",
            {"root": 200, "finance": 200, "support": 200},
        ),
        # a TOTP device's secret (config URL and QR code): superusers only
        "otp_totp_totpdevice_config": (
            reverse("admin:otp_totp_totpdevice_config", args=[TOTPDevice.objects.first().pk]),
            {"root": 200, "finance": 403, "support": 403},
        ),
        "otp_totp_totpdevice_qrcode": (
            reverse("admin:otp_totp_totpdevice_qrcode", args=[TOTPDevice.objects.first().pk]),
            {"root": 200, "finance": 403, "support": 403},
        ),
        "auth_user_password_change": (
            reverse("admin:auth_user_password_change", args=[alice.pk]),
            {"root": 200, "finance": 403, "support": 403},
        ),
    }


def _page_expectations(
    model_admin: ModelAdmin, user: Any, obj: Any
) -> list[tuple[str, str, Callable[[], bool]]]:
    request = RequestFactory().get("/admin/")
    request.user = user
    info = (model_admin.model._meta.app_label, model_admin.model._meta.model_name)
    base = f"/admin/{info[0]}/{info[1]}/"
    # DRF's token pages are addressed by the token's user, as its list links them.
    pk = str(obj.user_id) if isinstance(obj, TokenProxy) else model_admin.model._meta.pk.value_to_string(obj)
    pages: list[tuple[str, str, Callable[[], bool]]] = [
        ("changelist", base, lambda: model_admin.has_view_or_change_permission(request)),
        ("add", f"{base}add/", lambda: model_admin.has_add_permission(request)),
        ("change", f"{base}{pk}/change/", lambda: model_admin.has_view_or_change_permission(request, obj)),
        ("history", f"{base}{pk}/history/", lambda: model_admin.has_view_or_change_permission(request, obj)),
        ("delete", f"{base}{pk}/delete/", lambda: model_admin.has_delete_permission(request, obj)),
    ]
    pages += [
        (f"search {q!r}", f"{base}?q={q}", lambda: model_admin.has_view_or_change_permission(request))
        for q in SEARCHES
    ]
    return pages


@pytest.fixture
def data(data: dict[str, Any]) -> Any:
    """The scenario's world, plus rows for the pages of the other apps."""
    w = data
    # Rows for the pages of the other apps: an API token, the beat schedules.
    Token.objects.create(user=w["alice"])
    every_minute = IntervalSchedule.objects.create(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name="sweep", task="billing.stripe.tasks.stripe_events_sweep_task", interval=every_minute
    )
    CrontabSchedule.objects.create(minute="0", hour="3")
    SolarSchedule.objects.create(event="sunrise", latitude=48.85, longitude=2.35)
    ClockedSchedule.objects.create(clocked_time=timezone.now())
    # Metered billing: a metered price, a meter, a report sent and one pending, a reconciliation.
    MeteredPriceFactory(
        plan_feature=PlanFeature.objects.filter(feature__code="projects").first(),
        zone=PricingZone.objects.get(code="eurozone"),
        unit_amount=5,
    )
    StripeMeterFactory(event_name="api_calls")
    MeterReportFactory(stripe_customer_id="cus_123", status="sent", attempts=1)
    MeterReportFactory(stripe_customer_id="cus_456")
    MeterReconciliationLineFactory(stripe_customer_id="cus_123", ours=42, stripe=40, difference=-2)
    # The usage app's ledger, counters, corrections, holds and thresholds.
    UsageRecordFactory(user=w["alice"])
    counter = UsageCounterFactory(user=w["alice"])
    UsageAdjustmentFactory(user=w["alice"], staff_user=w["root"])
    UsageReservationFactory(user=w["alice"])
    UsageThresholdFactory(subject=counter.subject)
    # A dunning case with a failed retry and its email; a plan's own policy; a decline rule.
    case = DunningCaseFactory()
    DunningAttemptFactory(case=case, number=1, status="failed", decline_code="insufficient_funds")
    DunningEmailFactory(case=case)
    DunningPolicyFactory()
    DeclineRuleFactory()
    # The login's lockout records (django-axes) and two-factor devices (django-otp).
    seen = {"user_agent": "test", "ip_address": "203.0.113.9", "username": "alice", "http_accept": "*/*"}
    AccessAttempt.objects.create(
        **seen, path_info="/admin/login/", get_data="", post_data="", failures_since_start=3
    )
    AccessLog.objects.create(**seen, path_info="/admin/login/")
    AccessFailureLog.objects.create(**seen, path_info="/admin/login/", locked_out=False)
    TOTPDevice.objects.create(user=w["finance"], name="phone")
    StaticDevice.objects.create(user=w["root"], name="backup")
    return w


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
def test_every_admin_page_answers_what_the_role_may_do(role: str, data: dict[str, Any]) -> None:
    user = data[role]
    client = Client()
    client.force_login(user)
    custom = _custom_views(data)
    answers: list[tuple[str, int, int]] = []  # (what, expected, got)

    # the index and every app's index
    answers.append(("index", 200, client.get("/admin/").status_code))
    for app_label in sorted({m._meta.app_label for m in admin.site._registry}):
        expected = 200 if _app_visible(user, app_label) else 404
        answers.append((f"app {app_label}", expected, client.get(f"/admin/{app_label}/").status_code))

    for model, model_admin in admin.site._registry.items():
        obj = model_admin.get_queryset(_request(data["root"])).first()
        assert obj is not None, f"no {model._meta.label} row to open: add one to the scenario"
        for what, url, allowed in _page_expectations(model_admin, user, obj):
            expected = 200 if allowed() else 403
            # A search naming one customer opens their page: followed, it must answer too.
            got = client.get(url, follow=what.startswith("search")).status_code
            answers.append((f"{model._meta.label} {what} {url}", expected, got))
        for pattern in model_admin.get_urls():
            name = pattern.name or ""
            suffix = name.removeprefix(f"{model._meta.app_label}_{model._meta.model_name}_")
            if suffix in STANDARD_VIEWS or not name:
                continue
            assert name in custom, f"custom admin view {name} is missing from CUSTOM_VIEWS"

    for name, (url, expected_by_role) in custom.items():
        answers.append((f"custom {name} {url}", expected_by_role[role], client.get(url).status_code))

    wrong = [answer for answer in answers if answer[1] != answer[2]]
    assert wrong == []
    assert len(answers) > 200  # every model was really walked


def _request(user: Any) -> Any:
    request = RequestFactory().get("/admin/")
    request.user = user
    return request


def _app_visible(user: Any, app_label: str) -> bool:
    """As the admin decides: the app lists at least one model the user has some permission on."""
    request = _request(user)
    return any(
        model_admin.has_module_permission(request) and any(model_admin.get_model_perms(request).values())
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label == app_label
    )


@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_log_in(client: Client) -> None:
    for url in ["/admin/", "/admin/billing/plan/", "/admin/billing/payment/1/refund/"]:
        response = client.get(url)
        assert (response.status_code, response["Location"].split("?")[0]) == (302, "/admin/login/")


KEY_PAGES = {
    # finance edits the catalog; support only reads it
    "/admin/billing/plan/add/": {"root": 200, "finance": 200, "support": 403},
    "/admin/billing/pricingzone/add/": {"root": 200, "finance": 200, "support": 403},
    "/admin/billing/feature/add/": {"root": 200, "finance": 200, "support": 403},
    "/admin/billing/payment/": {"root": 200, "finance": 200, "support": 200},
    "/admin/billing/meteredprice/add/": {"root": 200, "finance": 200, "support": 403},
    # metered billing: read by all staff, written by the services only
    "/admin/billing/meterreport/?status__exact=pending": {"root": 200, "finance": 200, "support": 200},
    "/admin/billing/meterreconciliation/": {"root": 200, "finance": 200, "support": 200},
    "/admin/billing/meterreport/add/": {"root": 403, "finance": 403, "support": 403},
    # nobody types audit entries, payments or Stripe's objects by hand
    "/admin/accounts/auditlogentry/add/": {"root": 403, "finance": 403, "support": 403},
    "/admin/billing/payment/add/": {"root": 403, "finance": 403, "support": 403},
    "/admin/djstripe/charge/add/": {"root": 403, "finance": 403, "support": 403},
    # finance steers dunning and edits its policies; support reads them
    "/admin/subscriptions/dunningcase/": {"root": 200, "finance": 200, "support": 200},
    "/admin/subscriptions/dunningpolicy/add/": {"root": 200, "finance": 200, "support": 403},
    "/admin/subscriptions/dunningcase/add/": {"root": 403, "finance": 403, "support": 403},
    # staff accounts are the superuser's
    "/admin/auth/user/": {"root": 200, "finance": 403, "support": 403},
}


@pytest.mark.django_db
def test_the_roles_key_pages(data: dict[str, Any]) -> None:
    got: dict[str, dict[str, int]] = {}
    for url in KEY_PAGES:
        got[url] = {}
        for role in ROLES:
            client = Client()
            client.force_login(data[role])
            got[url][role] = client.get(url).status_code
    assert got == KEY_PAGES
