"""payments_project.redis_client: one client per thread on a connection of its own, made anew when
the caches change, after a failover's disconnect and in a forked child."""

from __future__ import annotations

import os
import threading
from typing import Any

from django_redis import get_redis_connection

from payments_project.redis_client import redis_client, redis_script

SCRIPT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def _in_thread(work: Any) -> Any:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(work()))
    thread.start()
    thread.join()
    return out[0]


def test_a_thread_keeps_one_client_on_one_connection_of_the_cache_pool() -> None:
    # when this thread asks twice and another thread once
    first, again = redis_client(), redis_client()
    other = _in_thread(redis_client)

    # then this thread has one client, the other its own, both on the cache's pool, each
    # holding one connection of it
    pool = get_redis_connection("default").connection_pool
    assert first is again
    assert other is not first
    assert (first.connection_pool, other.connection_pool) == (pool, pool)
    assert first.connection is not None
    assert first.connection is not other.connection
    assert first.ping() is True


def test_a_script_runs_on_the_kept_client_and_is_registered_once_per_thread() -> None:
    # given a fresh key
    key = f"redis-client-test:{os.getpid()}:{threading.get_ident()}"
    client = redis_client()
    client.delete(key)

    # when the script is asked for twice and run on the thread's client
    script = redis_script(SCRIPT)
    assert redis_script(SCRIPT) is script
    assert script(keys=[key], args=[5], client=client) == 5
    assert script(keys=[key], args=[2], client=client) == 7

    # then the counter is the sum, as the pooled client reads it
    assert int(get_redis_connection("default").get(key)) == 7
    client.delete(key)


def test_a_change_of_the_caches_setting_gives_a_new_client(settings: Any) -> None:
    # given this thread's client
    before = redis_client()
    script_before = redis_script(SCRIPT)

    # when the caches are configured again (the same server, another key prefix)
    settings.CACHES = {**settings.CACHES, "default": {**settings.CACHES["default"], "KEY_PREFIX": "other"}}

    # then a new client of the new cache's pool answers, and the old one gave its connection back
    after = redis_client()
    assert after is not before
    assert after.connection_pool is get_redis_connection("default").connection_pool
    assert before.connection is None
    assert redis_script(SCRIPT) is not script_before
    assert after.ping() is True


def test_after_the_pool_is_disconnected_the_kept_client_reconnects() -> None:
    # given a kept client that has talked to Redis
    client = redis_client()
    assert client.ping() is True

    # when every connection of the pool is closed (what a failover handler does)
    get_redis_connection("default").connection_pool.disconnect()

    # then the kept client's next command opens its connection again
    assert client.ping() is True
    assert redis_client() is client


def test_a_forked_child_makes_its_own_client() -> None:
    # given this thread's client, connected
    parent = redis_client()
    assert parent.ping() is True
    parent_connection = id(parent.connection)

    # when the process forks and the child asks for its client
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answers on the pipe, never returns into pytest
        try:
            child = redis_client()
            answer = b"new" if child is not parent and id(child.connection) != parent_connection else b"same"
            if child.ping() is not True:
                answer = b"noping"
        except BaseException:  # noqa: BLE001 - any failure is the child's answer
            answer = b"error"
        os.write(write, answer)
        os._exit(0)
    os.close(write)
    answer = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)

    # then the child had a client of its own, and the parent's still works
    assert answer == b"new"
    assert parent.ping() is True
