import json
import logging

import pytest
from django.test import Client
from pythonjsonlogger.json import JsonFormatter

from payments_project.observability import RequestIdFilter, bind_request_id


def test_log_lines_are_json_with_the_request_id() -> None:
    # given the project's JSON formatter and request-id filter
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Capture()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    logger = logging.getLogger("payments.test")
    logger.addHandler(handler)
    try:
        # when a line is logged while a request id is bound
        bind_request_id("req-42")
        logger.warning("refund %s", 7)
    finally:
        logger.removeHandler(handler)

    # then it is one JSON object carrying the request id
    line = json.loads(records[0])
    assert (line["level"], line["logger"], line["message"], line["request_id"]) == (
        "WARNING",
        "payments.test",
        "refund 7",
        "req-42",
    )


@pytest.mark.django_db
def test_metrics_carry_the_design_names(client: Client) -> None:
    text = client.get("/metrics").content.decode()
    for name in [
        "payment_total",
        "payment_success_total",
        "payment_failed_total",
        "payment_duration_seconds",
        "payment_amount_total",
        "entitlement_checks_total",
        "entitlement_cache_hits_total",
        "entitlement_cache_misses_total",
        "entitlement_check_duration_seconds",
        "circuit_breaker_state",
    ]:
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
