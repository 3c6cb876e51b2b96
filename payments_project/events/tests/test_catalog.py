"""The event catalog: generated from the code, checked in, linked from the README; every schema a
valid JSON Schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from jsonschema import Draft202012Validator

from payments_project.events.catalog import ENVELOPE_SCHEMA, catalog_stale
from payments_project.events.registry import event_type, event_types

DOCS = Path(settings.BASE_DIR) / "docs"
# Every type the issue lists; a type added later must be added here and to the flow test.
EXPECTED_TYPES = {
    "payment.succeeded",
    "payment.failed",
    "payment.refunded",
    "checkout.completed",
    "subscription.created",
    "subscription.status_changed",
    "subscription.plan_changed",
    "subscription.cancel_scheduled",
    "subscription.resumed",
    "subscription.cancelled",
    "entitlement.granted",
    "entitlement.suspended",
    "entitlement.revoked",
    "family.member_added",
    "family.member_removed",
    "catalog.plan_changed",
    "catalog.price_changed",
    "catalog.zone_changed",
    "catalog.plan_deleted",
    "catalog.price_deleted",
    "catalog.zone_deleted",
    "usage.threshold_reached",
    "dunning.case_opened",
    "dunning.stage_changed",
    "dunning.retry_finished",
}


def test_every_listed_event_type_is_declared() -> None:
    assert {declared.name for declared in event_types()} == EXPECTED_TYPES


def test_the_checked_in_catalog_matches_the_code() -> None:
    # when this fails: python manage.py events_catalog, and commit docs/
    assert catalog_stale(DOCS) == []


def test_every_schema_is_a_valid_json_schema() -> None:
    Draft202012Validator.check_schema(ENVELOPE_SCHEMA)
    for declared in event_types():
        Draft202012Validator.check_schema(declared.schema())


def test_the_readme_links_the_catalog() -> None:
    assert "(docs/events.md)" in (Path(settings.BASE_DIR) / "README.md").read_text()


def test_a_type_cannot_be_declared_twice() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        event_type(name="payment.succeeded", aggregate="payment", description="again", properties={})


def test_the_command_reports_a_stale_catalog(tmp_path: Path) -> None:
    call_command("events_catalog", "--docs", str(tmp_path))
    (tmp_path / "events" / "payment.succeeded.v1.json").write_text("{}")
    (tmp_path / "events" / "gone.v1.json").write_text("{}")

    assert catalog_stale(tmp_path) == ["events/gone.v1.json", "events/payment.succeeded.v1.json"]
    with pytest.raises(Exception, match="stale event catalog"):
        call_command("events_catalog", "--docs", str(tmp_path), "--check")
