"""Redis clients for the commands of the hot paths: one per thread, each keeping its connection.

django-redis hands out one client per cache whose every command takes a connection from the pool
and gives it back, under a lock and with redis-py's bookkeeping: on a small command that is about
a third of its CPU (an EVALSHA in a loop here: 143 µs against 93 µs when the client keeps its
connection), and a warm usage event sends two. `redis_script_run` runs a script on a client that
keeps one connection of the same pool for its thread (redis-py's single_connection_client): the
same settings, and a `connection_pool.disconnect()` (a failover) closes it too; it reconnects on
its next command. The thread's client and scripts are found without asking django-redis again
(a cache look-up per command was another few percent of a warm event).

A kept connection is never handed out by the pool again, so it is looked after here: after a
second idle, a poll sees a connection the server closed (a restart, its idle `timeout`) and drops
it, so the command opens a new one instead of failing; and a command left by any exception between
its request and its reply (a signal, a time limit) drops the connection, so its late reply can
never answer the next command. (The pool checks only when it hands a connection out, and sees a
reply that has arrived, not one still in flight; redis-py 8 skips even that while maintenance
notifications are on, so settings.py turns them off.)
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from django_redis import get_redis_connection
from redis.exceptions import ResponseError

_local = threading.local()
_generation = [0]  # moved on by a change of settings.CACHES (tests): every thread builds anew
IDLE_CHECK_SECONDS = 1.0


@dataclass
class _Kept:
    generation: int
    base: Any  # django-redis's client of the cache (pooled)
    client: Any = None  # this thread's, on one connection of base's pool (made on first use)
    used_at: float = 0.0  # time.monotonic() of its last command
    scripts: dict[str, Any] = field(default_factory=dict)  # source -> Script


def _kept(alias: str) -> _Kept:
    kept: dict[str, _Kept] | None = getattr(_local, "kept", None)
    if kept is None:
        kept = _local.kept = {}
    entry = kept.get(alias)
    if entry is None or entry.generation != _generation[0]:
        if entry is not None and entry.client is not None:
            entry.client.close()  # its connection back to its pool
        entry = kept[alias] = _Kept(_generation[0], get_redis_connection(alias))
    return entry


def redis_client(alias: str = "default") -> Any:
    """This thread's client of the django-redis cache `alias`, keeping its own connection.
    Raises what get_redis_connection raises (NotImplementedError: not a django-redis cache) and,
    on its first use in a thread, redis-py's ConnectionError when Redis is unreachable."""
    return _client_of(_kept(alias))


def _client_of(entry: _Kept) -> Any:
    if entry.client is None:
        base = entry.base
        entry.client = type(base)(connection_pool=base.connection_pool, single_connection_client=True)
    return entry.client


def redis_script_run(source: str, *, keys: list[Any], args: list[Any], alias: str = "default") -> Any:
    """Run the Lua `source` (by EVALSHA, loaded once) on this thread's kept connection."""
    entry = _kept(alias)
    client = _client_of(entry)
    now = time.monotonic()
    conn = client.connection
    if now - entry.used_at > IDLE_CHECK_SECONDS and conn is not None and conn.is_connected:
        try:
            closed_or_stale = conn.can_read()  # EOF (closed by the server) or bytes nobody asked for
        except Exception:  # noqa: BLE001 - a closed socket: redis-py's ConnectionError, or OSError
            closed_or_stale = True
        if closed_or_stale:
            conn.disconnect()
    entry.used_at = now
    try:
        return _script_of(entry, source)(keys=keys, args=args, client=client)
    except ResponseError:
        raise  # an error reply: read whole, the connection is in step
    except BaseException:
        if client.connection is not None:
            client.connection.disconnect()
        raise


def redis_script(source: str, alias: str = "default") -> Any:
    """The redis-py Script of `source` (its SHA computed once per thread), to call with
    client=redis_client() or the pooled client."""
    return _script_of(_kept(alias), source)


def _script_of(entry: _Kept, source: str) -> Any:
    script = entry.scripts.get(source)
    if script is None:
        script = entry.scripts[source] = entry.base.register_script(source)
    return script


@receiver(setting_changed)
def _settings_changed(*, setting: str, **_: Any) -> None:
    if setting == "CACHES":
        _generation[0] += 1


def _forget_after_fork() -> None:
    # A forked child (a Celery prefork worker) must not write on its parent's sockets: a kept
    # connection skips the pool's own check of the process id.
    _local.__dict__.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
