"""What the usage migrations set on PostgreSQL beyond the models' own fields."""

from __future__ import annotations

import pytest
from django.db import connection

from usage.models import UsageCounter

pytestmark = [pytest.mark.django_db]


def test_the_counter_table_leaves_half_of_each_page_for_in_place_updates() -> None:
    # when the counter table's storage options are read
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = %s", [UsageCounter._meta.db_table])
        (options,) = cursor.fetchone()

    # then its fillfactor is 50 (migration 0006: counter updates stay HOT)
    assert options == ["fillfactor=50"]
