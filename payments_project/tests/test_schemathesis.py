"""The OpenAPI contract, fuzzed: schemathesis against the production server of the project (on
loopback, PostgreSQL and Redis), every operation, as a customer and as finance staff.

Checks: no 5xx server error, every answer's body matches the schema, every status is one the
schema lists. Examples per operation and token are few (EXAMPLES) to keep the run within a few
minutes; derandomized, so a failure reproduces.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import Group
from django.db import connection
from hypothesis import HealthCheck, Phase, given, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from billing.catalog.tests.factories import PlanFactory, PriceFactory, PricingZoneFactory
from devtools.testing import StandinServer
from payments_project.accounts.tests.factories import UserFactory
from payments_project.tests.test_serve import _serve

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "25"))
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


def _production_env(standin: StandinServer) -> dict[str, str]:
    return {
        "APP_ENV": "production",
        "DJANGO_SECRET_KEY": "x" * 64 + "-schemathesis-production-secret",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}",
        "STRIPE_SECRET_KEY": "sk_test_schemathesis000000000000000000",
        "STRIPE_WEBHOOK_SECRET": "whsec_schemathesis",
        "STRIPE_API_BASE": standin.url,
        "RATELIMIT_ENABLE": "0",  # the fuzzer is one client: its 429s would hide everything else
        "WEB_CONCURRENCY": "1",
        "WEB_THREADS": "4",
        "DJANGO_DEBUG": "0",
    }


@pytest.mark.django_db(transaction=True)
def test_every_operation_keeps_the_contract_under_fuzzing(stripe_standin: StandinServer) -> None:
    # given a catalog, a customer and a finance staff member with API tokens
    PriceFactory(plan=PlanFactory(code="pro"), currency="USD", amount=999)
    PricingZoneFactory(code="us", currency="USD", is_default=True)
    customer = Token.objects.create(user=UserFactory(username="fuzz-customer")).key
    staff = UserFactory(username="fuzz-finance", is_staff=True)
    staff.groups.add(Group.objects.get(name="finance"))
    tokens = {"customer": customer, "finance": Token.objects.create(user=staff).key}
    process, base = _serve(_production_env(stripe_standin))
    try:
        schema = schemathesis.openapi.from_url(f"{base}/api/v1/schema/?format=json")
        failures: list[str] = []
        calls: list[int] = []
        operations = 0
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1
            for role, token in tokens.items():
                failure = _fuzz(operation, base, token, calls)
                if failure:
                    failures.append(f"{role} {operation.label}: {failure}")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    # then every operation was fuzzed and none broke the contract
    print(f"schemathesis: {operations} operations, {len(calls)} requests, statuses {sorted(set(calls))}")
    assert operations >= 20
    assert len(calls) >= operations * len(tokens) * 2  # examples really sent, several per operation
    assert failures == []


def _fuzz(operation: Any, base: str, token: str, calls: list[int]) -> str:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call_and_validate(
            base_url=base, headers={"Authorization": f"Token {token}"}, checks=CHECKS
        )
        calls.append(response.status_code)

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - each operation's failures are collected
        return str(exc).splitlines()[0][:500] + "\n" + str(exc)[:1500]
    return ""
