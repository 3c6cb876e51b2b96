"""Dunning services: the sweep's claims under concurrency, one Stripe call per attempt, one email
per step, policies validated, decline rules, staff actions."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe
import time_machine
from django.core import mail
from django.db import connection
from django.utils import timezone
from prometheus_client import REGISTRY

from billing.catalog.tests.factories import PlanFactory
from billing.stripe import gateway as stripe_gateway
from devtools import standin_clock
from devtools.testing import StandinServer
from payments_project.accounts.models import AuditLogEntry
from payments_project.backoffice.tests.scenario import staff
from payments_project.errors import DomainError
from subscriptions.dunning.models import DeclineRule, DunningAttempt, DunningEmail
from subscriptions.dunning.selectors import decline_action, dunning_timeline
from subscriptions.dunning.services import (
    dunning_attempt_run,
    dunning_cases_open_by_stage,
    dunning_email_send,
    dunning_extend_grace,
    dunning_pause,
    dunning_policy_validate,
    dunning_sweep,
)
from subscriptions.dunning.tests.conftest import Renewal
from subscriptions.dunning.tests.factories import (
    DunningAttemptFactory,
    DunningCaseFactory,
    DunningPolicyFactory,
)


# --- the sweep --------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_enqueue_each_due_attempt_once() -> None:
    # given 120 due attempts over 30 cases, and 10 not yet due
    now = timezone.now()
    due = []
    for _ in range(30):
        case = DunningCaseFactory(opened_at=now - timedelta(days=2), cancel_at=now + timedelta(days=12))
        due += [
            DunningAttemptFactory(case=case, number=n, due_at=now - timedelta(minutes=n)) for n in range(1, 5)
        ]
    later = [DunningAttemptFactory(due_at=now + timedelta(hours=1)) for _ in range(10)]
    enqueued: list[list[int]] = [[], []]
    barrier = threading.Barrier(2)

    def sweep(slot: int) -> None:
        barrier.wait()
        try:
            dunning_sweep(
                now=now, batch_size=7, enqueue=enqueued[slot].extend, enqueue_cancel=lambda ids: None
            )
        finally:
            connection.close()

    # when two sweeps run at the same time in two threads (two connections)
    threads = [threading.Thread(target=sweep, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then every due attempt was enqueued exactly once, none of the others
    together = enqueued[0] + enqueued[1]
    assert sorted(together) == sorted(a.pk for a in due)
    assert len(together) == len(set(together)) == 120
    assert set(together).isdisjoint(a.pk for a in later)
    assert DunningAttempt.objects.filter(status="claimed").count() == 120


@pytest.mark.django_db
def test_the_sweep_uses_statements_per_batch_not_per_attempt(django_assert_max_num_queries) -> None:  # type: ignore[no-untyped-def]
    now = timezone.now()
    case = DunningCaseFactory(opened_at=now - timedelta(days=3), cancel_at=now + timedelta(days=11))
    DunningAttempt.objects.bulk_create(
        DunningAttempt(case=case, number=n, due_at=now - timedelta(minutes=1), idempotency_key=f"k{n}")
        for n in range(1, 301)
    )
    enqueued: list[int] = []
    # 300 attempts, batches of 100: a handful of statements per batch
    with django_assert_max_num_queries(25):
        result = dunning_sweep(
            now=now, batch_size=100, enqueue=enqueued.extend, enqueue_cancel=lambda ids: None
        )
    assert (result.claimed, result.batches, len(enqueued)) == (300, 3, 300)


@pytest.mark.django_db
def test_a_paused_case_and_a_claim_not_yet_expired_are_not_swept() -> None:
    now = timezone.now()
    paused = DunningAttemptFactory(case=DunningCaseFactory(paused=True), due_at=now - timedelta(hours=1))
    claimed = DunningAttemptFactory(status="claimed", claimed_until=now + timedelta(minutes=5), due_at=now)
    stale = DunningAttemptFactory(status="claimed", claimed_until=now - timedelta(minutes=1), due_at=now)
    enqueued: list[int] = []
    dunning_sweep(now=now, enqueue=enqueued.extend, enqueue_cancel=lambda ids: None)
    assert enqueued == [stale.pk]
    assert {paused.pk, claimed.pk}.isdisjoint(enqueued)


# --- one Stripe call per attempt ------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_retry_task_run_twice_calls_stripe_once(
    failed_renewal: Callable[..., Renewal], stripe_client: stripe.StripeClient
) -> None:
    renewal = failed_renewal()
    case = renewal.deliver_failed(stripe_client)
    assert case is not None
    attempt = case.attempts.get(number=1)
    DunningAttempt.objects.filter(pk=attempt.pk).update(
        status="claimed", claimed_until=timezone.now() + timedelta(minutes=5)
    )
    # when the same task runs twice (a redelivered message)
    outcomes = [dunning_attempt_run(attempt_id=attempt.pk), dunning_attempt_run(attempt_id=attempt.pk)]
    # then Stripe got one request, under the attempt's key
    pays = [entry for entry in standin_clock.requests_log() if entry[1].endswith("/pay")]
    assert pays == [("POST", f"/v1/invoices/{renewal.invoice_id}/pay", f"dunning:{renewal.invoice_id}:1")]
    assert outcomes == ["failed", "not_claimed"]


@pytest.mark.django_db(transaction=True)
def test_a_retry_whose_worker_died_is_sent_again_under_the_same_key_and_charged_once(
    failed_renewal: Callable[..., Renewal], stripe_client: stripe.StripeClient
) -> None:
    renewal = failed_renewal()
    case = renewal.deliver_failed(stripe_client)
    assert case is not None
    card = stripe_client.v1.payment_methods.attach("pm_card_visa", {"customer": renewal.customer_id})
    stripe_client.v1.customers.update(
        renewal.customer_id, {"invoice_settings": {"default_payment_method": card.id}}
    )
    attempt = case.attempts.get(number=1)
    # given the attempt's first sender reached Stripe, which paid, then died before recording it
    stripe_client.v1.invoices.pay(
        renewal.invoice_id, {"off_session": True}, {"idempotency_key": attempt.idempotency_key}
    )
    DunningAttempt.objects.filter(pk=attempt.pk).update(
        status="running",
        due_at=timezone.now() - timedelta(minutes=1),
        claimed_until=timezone.now() - timedelta(seconds=1),
    )
    # when the sweep claims it again and its task runs
    dunning_sweep()
    # then the second request carried the same key and Stripe replayed its answer: paid once
    pays = [entry for entry in standin_clock.requests_log() if entry[1].endswith("/pay")]
    assert [key for _, _, key in pays] == [attempt.idempotency_key] * 2
    case.refresh_from_db()
    assert (case.stage, case.recovered_amount) == ("recovered", 1500)
    assert stripe_client.v1.invoices.retrieve(renewal.invoice_id).amount_paid == 1500


# --- the failed renewal's codes, read from Stripe ---------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_no_retry_runs_while_stripe_cannot_say_why_the_renewal_failed(
    failed_renewal: Callable[..., Renewal],
    stripe_client: stripe.StripeClient,
    stripe_standin: StandinServer,
    settings: Any,
) -> None:
    settings.STRIPE_MAX_NETWORK_RETRIES = 0  # one request per call: the log counts our asks
    stripe_gateway.client.cache_clear()
    start = datetime(2027, 5, 3, 8, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False) as traveller:
        # given a stolen card's renewal, and Stripe failing the first three reads of its payment
        # intent (where the card's codes are)
        renewal = failed_renewal(decline_later={"decline_code": "stolen_card"})
        read = f"/v1/payment_intents/{stripe_client.v1.invoices.retrieve(renewal.invoice_id).payment_intent}"
        stripe_standin.fail(read, status=500, times=3)
        # when the failure is delivered: the read after commit fails
        case = renewal.deliver_failed(stripe_client)
        assert case is not None
        case.refresh_from_db()
        # then the case waits undecided, access kept, no email yet (it says whether we retry)
        assert (case.stage, case.needs_new_card, case.decline_lookup_due_at) == (
            "past_due",
            False,
            start + timedelta(minutes=5),
        )
        assert DunningEmail.objects.filter(case=case).count() == 0
        # when the sweep runs: before the read is due, when it is (fails again), then on day 1
        # with the first retry due (fails a third time)
        for moment in (timedelta(minutes=3), timedelta(minutes=6), timedelta(days=1, minutes=5)):
            traveller.move_to(start + moment)
            dunning_sweep()
        # then the due retry was not run, its case still undecided
        assert case.attempts.get(number=1).status == "scheduled"
        pays = [entry for entry in standin_clock.requests_log() if entry[1].endswith("/pay")]
        assert pays == []
        # when the sweep runs once Stripe answers
        traveller.move_to(start + timedelta(days=1, minutes=15))
        dunning_sweep()
    # then the codes decided it: the stolen card is never retried, a new card is asked for
    case.refresh_from_db()
    assert (case.last_decline_code, case.needs_new_card, case.stage) == ("stolen_card", True, "suspended")
    assert set(case.attempts.values_list("status", flat=True)) == {"skipped"}
    assert [entry for entry in standin_clock.requests_log() if entry[1].endswith("/pay")] == []
    assert list(DunningEmail.objects.filter(case=case).values_list("step", flat=True)) == [
        "payment_failed",
        "suspended",
    ]


# --- emails ---------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_each_email_is_sent_once_per_step_even_when_delivered_and_run_again(
    failed_renewal: Callable[..., Renewal], stripe_client: stripe.StripeClient
) -> None:
    renewal = failed_renewal()
    # when Stripe delivers invoice.payment_failed twice
    first = renewal.deliver_failed(stripe_client)
    second = renewal.deliver_failed(stripe_client)
    assert first is not None and second is not None and first.pk == second.pk
    email = DunningEmail.objects.get(case=first)
    # and the email task runs again (a redelivered message)
    assert dunning_email_send(email_id=email.pk) is False
    # then one email went out, with the update-card link
    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject == "Your payment for Pro failed"
    assert "http://127.0.0.1:8000/account/billing/card" in mail.outbox[0].body
    assert "$15.00" in mail.outbox[0].body
    assert DunningEmail.objects.filter(case=first).count() == 1


# --- policies and decline rules ---------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"retry_offsets_days": [3, 1]}, "retry_offsets_days"),
        ({"retry_offsets_days": list(range(1, 13))}, "retry_offsets_days"),
        ({"retry_offsets_days": [1, 3, 40], "cancel_after_days": 28}, "retry_offsets_days"),
        ({"retry_offsets_days": "1,3"}, "retry_offsets_days"),
        ({"cancel_after_days": 5}, "cancel_after_days"),
        ({"cancel_after_days": 45}, "cancel_after_days"),
        ({"suspend_after_failed_retries": 5}, "suspend_after_failed_retries"),
        ({"past_due_access": "features", "past_due_features": []}, "past_due_features"),
        ({"past_due_access": "features", "past_due_features": ["nope"]}, "past_due_features"),
    ],
)
def test_a_policy_that_retries_forever_or_past_the_interval_is_refused(changes: dict, field: str) -> None:
    values = {
        "plan": PlanFactory(interval="month"),
        "retry_offsets_days": [1, 3, 5, 7],
        "past_due_access": "full",
        "past_due_features": [],
        "suspend_after_failed_retries": 3,
        "cancel_after_days": 14,
        **changes,
    }
    with pytest.raises(DomainError) as refused:
        dunning_policy_validate(**values)
    assert list(refused.value.fields) == [field]


@pytest.mark.django_db
def test_a_yearly_plan_may_retry_over_more_days() -> None:
    dunning_policy_validate(
        plan=PlanFactory(interval="year"),
        retry_offsets_days=[1, 7, 30, 60],
        past_due_access="none",
        past_due_features=[],
        suspend_after_failed_retries=2,
        cancel_after_days=90,
    )


@pytest.mark.django_db
def test_the_timeline_preview_says_which_day_each_step_happens() -> None:
    policy = DunningPolicyFactory(
        retry_offsets_days=[1, 3, 5, 7], suspend_after_failed_retries=3, cancel_after_days=14
    )
    opened = timezone.now()
    steps = [
        (step.day, step.what.split(":")[0]) for step in dunning_timeline(policy=policy, opened_at=opened)
    ]
    assert steps == [
        (0, "renewal fails"),
        (1, "retry 1 fails"),
        (3, "retry 2 fails"),
        (5, "retry 3 fails"),
        (7, "retry 4 fails"),
        (14, "cancelled in Stripe, invoice voided, access revoked"),
    ]
    assert "suspended" in dunning_timeline(policy=policy, opened_at=opened)[3].what


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        (("stolen_card", "", ""), ("never", 0)),
        (("insufficient_funds", "do_not_try_again", ""), ("never", 0)),
        (("insufficient_funds", "", ""), ("retry", 0)),
        (("generic_decline", "try_again_later", ""), ("not_before", 24)),
        (("generic_decline", "", "03"), ("never", 0)),
        (("", "", ""), ("retry", 0)),
    ],
)
def test_decline_rules_seeded_by_the_migration(
    codes: tuple[str, str, str], expected: tuple[str, int], dunning_seeded: None
) -> None:
    assert DeclineRule.objects.filter(decline_code="stolen_card").exists()
    assert (
        decline_action(decline_code=codes[0], advice_code=codes[1], network_advice_code=codes[2]) == expected
    )


# --- staff ----------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_staff_pause_and_grace_are_audited_and_support_may_not() -> None:
    finance_user, support_user = staff("fin", "finance"), staff("agent", "support")
    case = DunningCaseFactory()
    dunning_pause(case=case, staff_user=finance_user, paused=True, reason="customer on the phone")
    extended = dunning_extend_grace(case=case, staff_user=finance_user, days=5, reason="bank transfer coming")
    assert extended.cancel_at == case.opened_at + timedelta(days=19)
    actions = list(AuditLogEntry.objects.order_by("pk").values_list("action", flat=True))
    assert actions == ["dunning.pause", "dunning.extend_grace"]
    with pytest.raises(DomainError) as refused:
        dunning_pause(case=case, staff_user=support_user, paused=False, reason="")
    assert refused.value.status_code == 403


# --- metrics --------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_open_cases_are_counted_by_stage_for_metrics() -> None:
    for stage in ("past_due", "past_due", "suspended", "recovered", "cancelled"):
        DunningCaseFactory(stage=stage)
    assert dunning_cases_open_by_stage() == {"past_due": 2, "suspended": 1}
    assert REGISTRY.get_sample_value("dunning_cases_open", {"stage": "past_due"}) == 2
    assert REGISTRY.get_sample_value("dunning_cases_open", {"stage": "suspended"}) == 1
