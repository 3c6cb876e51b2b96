"""Dunning's domain events: a case opened, its stage moved, a retry finished."""

from __future__ import annotations

from typing import Any

from payments_project.events.envelope import rfc3339
from payments_project.events.registry import amount, boolean, currency, event_type, integer, string, timestamp
from payments_project.events.services import Actor, event_record
from subscriptions.dunning.models import DunningAttempt, DunningCase

_STAGES = list(DunningCase.Stage.values)
_CASE = {
    "case_id": integer("Our dunning case (the aggregate id).", minimum=1),
    "subscription_id": integer("The subscription whose renewal is unpaid.", minimum=1),
    "user_id": integer("The customer who pays.", minimum=1),
    "stripe_invoice_id": string("Stripe's unpaid invoice.", max_length=255),
    "stage": string("Stage now.", enum=_STAGES),
    "amount_due": amount("Amount of the unpaid invoice"),
    "currency": currency(),
    "failed_retries": integer("Automatic retries that failed so far.", minimum=0),
    "needs_new_card": boolean("Retries stopped until the customer adds a card (hard decline)."),
}
DUNNING_CASE_OPENED = event_type(
    name="dunning.case_opened",
    aggregate="dunning_case",
    description="A renewal invoice failed: a dunning case is open and its retries are scheduled.",
    properties={**_CASE, "opened_at": timestamp("Day 0 of the retry schedule.")},
)
DUNNING_STAGE_CHANGED = event_type(
    name="dunning.stage_changed",
    aggregate="dunning_case",
    description="A dunning case moved: suspended, cancelled, recovered (paid) or stopped.",
    properties={
        **_CASE,
        "from_stage": string("Stage before.", enum=_STAGES),
        "reason": string("Why it moved.", max_length=200),
    },
)
DUNNING_RETRY_FINISHED = event_type(
    name="dunning.retry_finished",
    aggregate="dunning_case",
    description="One retry of the unpaid invoice finished: succeeded, failed (with the card's codes), "
    "or skipped.",
    properties={
        **_CASE,
        "attempt": integer("Attempt number within the case.", minimum=1),
        "kind": string("Who asked for it.", enum=list(DunningAttempt.Kind.values)),
        "outcome": string("How it ended.", enum=["succeeded", "failed", "skipped", "cancelled"]),
        "decline_code": string("Stripe's decline code.", max_length=64, nullable=True),
        "advice_code": string("Stripe's advice code.", max_length=64, nullable=True),
        "network_advice_code": string("The card network's advice code.", max_length=16, nullable=True),
    },
)


def case_payload(case: DunningCase) -> dict[str, Any]:
    return {
        "case_id": case.pk,
        "subscription_id": case.subscription_id,
        "user_id": case.subscription.user_id,
        "stripe_invoice_id": case.stripe_invoice_id,
        "stage": case.stage,
        "amount_due": case.amount_due,
        "currency": case.currency,
        "failed_retries": case.failed_retries,
        "needs_new_card": case.needs_new_card,
    }


def _actor(staff_user: Any) -> Actor:
    return Actor.of_user(staff_user) if staff_user is not None else Actor.schedule("dunning")


def case_opened_record(case: DunningCase) -> None:
    event_record(
        event_type=DUNNING_CASE_OPENED,
        aggregate_id=case.pk,
        payload={**case_payload(case), "opened_at": rfc3339(case.opened_at)},
        actor=Actor.schedule("dunning"),
    )


def stage_changed_record(case: DunningCase, *, from_stage: str, reason: str, staff_user: Any = None) -> None:
    event_record(
        event_type=DUNNING_STAGE_CHANGED,
        aggregate_id=case.pk,
        payload={**case_payload(case), "from_stage": from_stage, "reason": reason[:200]},
        actor=_actor(staff_user),
    )


def retry_finished_record(case: DunningCase, attempt: DunningAttempt, *, outcome: str) -> None:
    event_record(
        event_type=DUNNING_RETRY_FINISHED,
        aggregate_id=case.pk,
        payload={
            **case_payload(case),
            "attempt": attempt.number,
            "kind": attempt.kind,
            "outcome": outcome,
            "decline_code": attempt.decline_code or None,
            "advice_code": attempt.advice_code or None,
            "network_advice_code": attempt.network_advice_code or None,
        },
        actor=Actor.schedule("dunning"),
    )
