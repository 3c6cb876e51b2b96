"""payments_project.db: the hot statements are planned once per connection on PostgreSQL."""

from __future__ import annotations

from datetime import UTC

import pytest
from django.db import connection
from django.utils import timezone
from psycopg.pq import Format

from payments_project.db import prepared_cursor

pytestmark = pytest.mark.django_db

STATEMENT = "SELECT count(*) FROM auth_user WHERE id = ANY(%s) AND username <> %s"


def test_a_statement_is_prepared_on_its_first_run_and_its_generic_plan_reused() -> None:
    # when the same statement runs three times with other values
    for ids in ([1], [2, 3], [4]):
        with prepared_cursor() as cursor:
            cursor.execute(STATEMENT, [ids, "nobody"])
            assert cursor.fetchone() == (0,)

    # then the connection holds it prepared once, run on one generic plan each time
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE %s",
            ["%auth_user WHERE id = ANY($1)%"],
        )
        assert cursor.fetchall() == [(3, 0)]


def test_when_django_logs_queries_its_own_cursor_runs_and_logs_the_values(
    django_assert_num_queries: object,
) -> None:
    # when the statement runs while a test captures queries
    with django_assert_num_queries(1) as captured, prepared_cursor() as cursor:  # type: ignore[operator]
        cursor.execute(STATEMENT, [[7], "nobody"])

    # then the log shows it with its values (Django's client-side binding)
    assert captured.captured_queries[0]["sql"] == (
        "SELECT count(*) FROM auth_user WHERE id = ANY('{7}'::int2[]) AND username <> 'nobody'"
    )


def test_with_prepared_statements_off_nothing_is_prepared(monkeypatch: pytest.MonkeyPatch) -> None:
    # given DATABASE_PREPARED_STATEMENTS=0 (the connection options say no threshold)
    options = {k: v for k, v in connection.settings_dict["OPTIONS"].items() if k != "prepare_threshold"}
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", options)

    # when a statement of its own runs through the cursor
    with prepared_cursor() as cursor:
        cursor.execute("SELECT count(*) FROM auth_user WHERE username = %s AND id > %s", ["off", 0])
        assert cursor.fetchone() == (0,)

    # then it was not prepared
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", ["%username = $1%"]
        )
        assert cursor.fetchone() == (0,)


def test_results_come_back_as_django_reads_them() -> None:
    # given a statement returning an integer, text, a boolean, a timestamp and a null timestamp
    at = timezone.now()
    statement = "SELECT %s::bigint, %s::text, %s::boolean, %s::timestamptz, NULL::timestamptz"
    values = [2**62, "café ✓", True, at]

    # when it runs through the prepared cursor (binary results) and through Django's own cursor
    with prepared_cursor() as cursor:
        cursor.execute(statement, values)
        prepared = cursor.fetchone()
        prepared_format = cursor.cursor.format
    with connection.cursor() as cursor:
        cursor.execute(statement, values)
        plain = cursor.fetchone()

    # then the prepared cursor read binary results, and both read the same values, the timestamp
    # aware in UTC
    assert prepared_format == Format.BINARY
    assert prepared == plain == (2**62, "café ✓", True, at, None)
    assert prepared[3].tzinfo == plain[3].tzinfo == UTC
