from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from billing.catalog.tests.factories import FeatureFactory, PlanFactory, PlanFeatureFactory
from billing.models import Feature, PlanFeature
from entitlements.models import Entitlement
from entitlements.tests.conftest import redis_commands  # noqa: F401 - the fixture, shared
from entitlements.tests.factories import EntitlementFactory
from payments_project.accounts.tests.factories import UserFactory
from subscriptions.tests.factories import FamilyFactory, SubscriptionFactory
from usage import selectors


@pytest.fixture(autouse=True)
def _no_remembered_quotas() -> Iterator[None]:
    """Each test starts with a process that has read no quota (usage.selectors.quota_remembered)."""
    selectors._remembered.clear()
    yield
    selectors._remembered.clear()


@pytest.fixture
def quota() -> Callable[..., Any]:
    """A user (or, family=True, a family owner) entitled to `code` with `limit` per `reset_period`,
    through an active subscription whose current period starts at `period_start`."""

    def make(
        code: str = "api_calls",
        *,
        limit: int | None = 100,
        reset_period: str = PlanFeature.Reset.BILLING_PERIOD,
        policy: str = PlanFeature.QuotaPolicy.HARD,
        overage_percent: int = 0,
        period_start: datetime | None = None,
        user: Any = None,
        family: bool = False,
    ) -> Any:
        feature = Feature.objects.filter(code=code).first() or FeatureFactory(
            code=code, kind=Feature.Kind.METERED
        )
        plan = PlanFactory(is_family=family, max_members=6 if family else None)
        PlanFeatureFactory(
            plan=plan,
            feature=feature,
            limit=limit,
            reset_period=reset_period,
            quota_policy=policy,
            overage_percent=overage_percent,
        )
        user = user or UserFactory()
        fields: dict[str, Any] = {"user": user, "plan": plan}
        if period_start is not None:
            fields["current_period_start"] = period_start
        family_row = None
        if family:
            family_row = FamilyFactory(owner=user)
            fields["family"] = family_row
        subscription = SubscriptionFactory(**fields)
        EntitlementFactory(
            user=None if family else user,
            family=family_row,
            feature=feature,
            plan=plan,
            subscription=subscription,
            source=Entitlement.Source.SUBSCRIPTION,
            limit=limit,
            reset_period=reset_period,
            # Granted when the subscription's period began (events before it are refused).
            **({"granted_at": period_start} if period_start is not None else {}),
        )
        user.family = family_row
        user.subscription = subscription
        return user

    return make
