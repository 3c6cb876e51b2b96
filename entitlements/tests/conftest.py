from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import redis.client

from billing.catalog.tests.factories import FeatureFactory, PlanFactory, PlanFeatureFactory
from billing.models import Plan
from entitlements.selectors import feature_codes_forget


@pytest.fixture(autouse=True)
def _fresh_feature_codes() -> Iterator[None]:
    feature_codes_forget()
    yield
    feature_codes_forget()


@pytest.fixture
def make_plan() -> Callable[..., Plan]:
    def make(*codes: str, **plan_fields: Any) -> Plan:
        plan = cast(Plan, PlanFactory(**plan_fields))
        for code in codes:
            PlanFeatureFactory(plan=plan, feature=FeatureFactory(code=code))
        return plan

    return make


@pytest.fixture
def redis_commands(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every command sent through redis-py's client (pipelines excluded), in order."""
    sent: list[tuple[Any, ...]] = []
    original = redis.client.Redis.execute_command

    def counting(self: redis.client.Redis, *args: Any, **options: Any) -> Any:
        sent.append(args)
        return original(self, *args, **options)

    monkeypatch.setattr(redis.client.Redis, "execute_command", counting)
    return sent
