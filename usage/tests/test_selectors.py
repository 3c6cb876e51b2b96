"""Reads of the usage app that do not need the database."""

from __future__ import annotations

from datetime import UTC, datetime

from usage.selectors import aware_utc


def test_raw_sql_datetimes_are_read_as_aware_utc_whatever_the_database_returns() -> None:
    # PostgreSQL returns aware datetimes; SQLite (make run) naive ones, or text
    aware = datetime(2027, 1, 31, 9, 30, tzinfo=UTC)
    assert aware_utc(aware) == aware
    assert aware_utc(datetime(2027, 1, 31, 9, 30)) == aware
    assert aware_utc("2027-01-31 09:30:00") == aware
    assert aware_utc("2027-01-31T09:30:00+00:00") == aware
    assert aware_utc(None) is None
    assert aware_utc("not a date") is None
