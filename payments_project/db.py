"""Cursors for the statements of the hottest paths, planned once per connection on PostgreSQL.

Django's PostgreSQL cursors bind parameters on the client (psycopg's ClientCursor), so every
statement is planned again on every run. For the usage ingest's statements (a seven-table quota
look-up, the ledger insert, the counters' upsert) planning cost PostgreSQL more than running
them: the quota look-up took about 0.7 ms to plan and 0.05 ms to run. `prepared_cursor()` binds on
the server and prepares each statement on its first run in a connection (settings: the
connection's `prepare_threshold` is 0, which only server-binding cursors heed: Django's own
cursors never prepare), and PostgreSQL reuses the plan from then on. DATABASE_PREPARED_STATEMENTS=0
turns it off (Django's cursor then).

Their results come back in PostgreSQL's binary format, read by psycopg's C loaders: Django
registers its own loader for timestamptz in text format only, a Python subclass that cost a
usage batch of 1,000 events more than a tenth of its Python time (the quota look-up's 1,500
timestamps: 7-8 ms of CPU in text, 3 in binary). The values are the same (aware UTC datetimes:
the session's time zone is UTC), for the types these statements return: integers, text,
booleans and timestamps. A jsonb or inet column would come back parsed (a dict, an ip_address)
where Django's text loaders give text: return such columns `::text`.

Only statements of a fixed text belong here (arrays or one JSON document as parameters, never a
list of placeholders that varies): psycopg keeps the last 100 prepared per connection. On SQLite
(`make run`) it is Django's usual cursor.

Behind PgBouncer in transaction mode: prepared statements need PgBouncer 1.21+ with
`max_prepared_statements` set, and PgBouncer refuses the `options` startup parameter the
settings use for the generic plans: list `options` in its `ignore_startup_parameters` and set
`ALTER ROLE <app role> SET plan_cache_mode = force_generic_plan` instead (it only affects
prepared statements there too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections

T = TypeVar("T")
logger = logging.getLogger(__name__)


@contextmanager
def prepared_cursor() -> Iterator[Any]:
    """A cursor of the default connection, wrapped as Django wraps its own (its errors), that
    prepares what it runs on PostgreSQL."""
    db = connections[DEFAULT_DB_ALIAS]  # once: each `connection.x` is a thread-local look-up
    preparing = db.settings_dict["OPTIONS"].get("prepare_threshold") is not None
    if db.vendor != "postgresql" or db.queries_logged or not preparing:
        # SQLite; Django logs the queries (DEBUG, a test capturing them): its log writes each
        # statement with its values, which only its client-binding cursor can; or prepared
        # statements are off (DATABASE_PREPARED_STATEMENTS=0, behind a pooler that loses them).
        with db.cursor() as cursor:
            yield cursor
        return
    import psycopg

    db.validate_thread_sharing()
    # As Django's own cursor: the connection's health check (at most once per request), so a
    # connection that died while idle is replaced rather than failing this statement.
    db.close_if_health_check_failed()
    db.ensure_connection()
    with db.wrap_database_errors:
        raw = psycopg.Cursor(db.connection)
    raw.format = psycopg.pq.Format.BINARY  # the results (see the module)
    # django-stubs name the raw cursor make_cursor wraps with the wrapper's own type.
    with db.make_cursor(raw) as cursor:  # type: ignore[arg-type]
        yield cursor


def without_health_check(call: Callable[[], T]) -> T:
    """`call()` without the request's health check of a reused connection (a `SELECT 1`, one
    round trip before the first statement): a connection that died while idle fails its first
    statement instead, and `call()` runs once more on a new connection.

    Only for a call that is safe to run twice: one that reads first, or whose writes are
    idempotent (a usage event and its key). Outside any transaction only, where a failed
    statement leaves nothing to roll back.
    """
    db: Any = connections[DEFAULT_DB_ALIAS]  # django-stubs lack the health check attributes
    reused = db.connection is not None and not db.in_atomic_block
    if not reused:
        return call()
    db.health_check_done = True  # (a WSGI layer may have marked it so already: the same bargain)
    try:
        return call()
    except (OperationalError, InterfaceError):
        if db.in_atomic_block or db.is_usable():
            raise  # the statement failed, not the connection
        logger.info("database connection found dead, running again on a new one", exc_info=True)
        db.close()
        return call()


def health_check_now() -> None:
    """Django's health check of the kept connection, now, whether or not this request made it
    already: for a rare path that reads the database behind a layer that skipped the check (the
    connection replaced if it died idle)."""
    db: Any = connections[DEFAULT_DB_ALIAS]
    db.health_check_done = False
    db.close_if_health_check_failed()
