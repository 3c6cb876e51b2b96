"""The staff audit log: written by the services in the same transaction as the change."""

import pytest

from billing.models import Payment
from billing.payments.services import payment_status_set
from payments_project.accounts.models import AuditLogEntry
from payments_project.accounts.selectors import audit_entries_for
from payments_project.accounts.services import audit_record
from payments_project.accounts.tests.factories import UserFactory


@pytest.mark.django_db
def test_a_staff_status_change_is_in_the_customers_audit_log() -> None:
    # given a customer's payment and a finance user
    customer = UserFactory(username="cus")
    staff = UserFactory(username="fin", is_staff=True)
    payment = Payment.objects.create(
        user=customer, amount=1500, currency="EUR", idempotency_key="a-1", status=Payment.Status.PROCESSING
    )

    # when staff sets its status by hand
    payment_status_set(payment_id=payment.pk, status="succeeded", staff_user=staff, reason="bank statement")

    # then the customer's audit log says who did what, to which payment, and why
    entries = list(
        audit_entries_for(user_id=customer.pk).values_list(
            "actor__username", "action", "target_type", "target_id", "reason", "data"
        )
    )
    assert entries == [
        (
            "fin",
            "payment.status_set",
            "billing.payment",
            str(payment.pk),
            "bank statement",
            {"from": "processing", "to": "succeeded"},
        )
    ]


@pytest.mark.django_db
def test_an_anonymous_actor_is_recorded_as_none_and_long_text_is_cut_to_the_columns() -> None:
    # when a job (no user) records an action with an over-long reason
    target = UserFactory(username="t")
    entry = audit_record(actor=None, action="x" * 100, target=target, reason="r" * 2000)

    # then the row fits its columns
    entry.refresh_from_db()
    assert (entry.actor_id, len(entry.action), len(entry.reason), entry.target_type) == (
        None,
        64,
        1000,
        "auth.user",
    )
    assert AuditLogEntry.objects.count() == 1
