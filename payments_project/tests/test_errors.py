"""Constraint names out of IntegrityErrors, as PostgreSQL and SQLite report them."""

import pytest
from django.db import IntegrityError

from payments_project.errors import constraint_name


@pytest.mark.parametrize(
    ("message", "name"),
    [
        ("UNIQUE constraint failed: subscriptions_family.owner_id", "family_one_per_owner"),
        ("UNIQUE constraint failed: subscriptions_familymember.user_id", "familymember_one_family_per_user"),
        (
            "UNIQUE constraint failed: billing_payment.user_id, billing_payment.idempotency_key",
            "payment_idempotency_key",
        ),
        ("CHECK constraint failed: refund_positive", "refund_positive"),
        ("UNIQUE constraint failed: billing_plan.code", ""),  # a field's unique=True has no name of ours
        ("NOT NULL constraint failed: billing_plan.name", ""),
    ],
)
def test_sqlite_messages_give_the_constraint_name(message: str, name: str) -> None:
    assert constraint_name(IntegrityError(message)) == name


@pytest.mark.django_db
def test_postgresql_names_the_constraint_itself() -> None:
    from payments_project.accounts.tests.factories import UserFactory
    from subscriptions.models import Family

    owner = UserFactory(username="o")
    Family.objects.create(owner=owner)
    with pytest.raises(IntegrityError) as caught:
        Family.objects.create(owner=owner)
    assert constraint_name(caught.value) == "family_one_per_owner"
