"""payments_project.redis_client: one client per thread on a connection of its own, made anew when
the caches change, after a failover's disconnect and in a forked child."""

from __future__ import annotations

import os
import threading
from typing import Any

from django_redis import get_redis_connection

from payments_project import redis_client as redis_client_module
from payments_project.redis_client import redis_client, redis_script, redis_script_run

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


ECHO = "return ARGV[1]"


class _Interrupted(BaseException):
    """What a signal handler or a time limit raises between a command and its reply."""


def test_a_kept_connection_the_server_closed_while_idle_is_replaced_before_the_command(
    monkeypatch: Any,
) -> None:
    # given a thread's kept connection that has run a script, then been closed by the server
    # (what a restart or the server's idle timeout does) and left idle past the check's delay
    assert redis_script_run(ECHO, keys=[], args=["first"]) == b"first"
    kept_id = redis_client().client_id()
    assert get_redis_connection("default").client_kill_filter(_id=kept_id) == 1
    monkeypatch.setattr(redis_client_module, "IDLE_CHECK_SECONDS", 0.0)

    # when the next script runs
    answer = redis_script_run(ECHO, keys=[], args=["second"])

    # then it is answered on a new connection, without an error
    assert answer == b"second"
    assert redis_client().client_id() != kept_id


def test_a_command_interrupted_before_its_reply_never_answers_the_next_one(monkeypatch: Any) -> None:
    # given a kept client whose next reply is interrupted before it is read
    client = redis_client()
    assert redis_script_run(ECHO, keys=[], args=["warm"]) == b"warm"
    real_parse = client.parse_response

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(client, "parse_response", real_parse)
        raise _Interrupted

    monkeypatch.setattr(client, "parse_response", interrupted)

    # when a script is sent and interrupted, then another one runs
    try:
        redis_script_run(ECHO, keys=[], args=["user-A"])
    except _Interrupted:
        pass
    else:
        raise AssertionError("the interruption did not happen")
    answer = redis_script_run(ECHO, keys=[], args=["user-B"])

    # then the second gets its own reply, not the first one's
    assert answer == b"user-B"


def test_a_pooled_connection_left_with_an_unread_reply_is_not_handed_out_with_it(monkeypatch: Any) -> None:
    # given the cache's pooled client, whose next command is interrupted after it was sent and
    # before its reply was read, and that reply has arrived (the connection went back to the pool
    # holding it)
    client = get_redis_connection("default")
    assert client.echo("warm") == b"warm"
    real_parse = client.parse_response
    sent_on: list[Any] = []

    def interrupted(connection: Any, *args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(client, "parse_response", real_parse)
        sent_on.append(connection)
        raise _Interrupted

    monkeypatch.setattr(client, "parse_response", interrupted)
    try:
        client.echo("user-A")
    except _Interrupted:
        pass
    else:
        raise AssertionError("the interruption did not happen")
    assert sent_on[0].can_read(timeout=2) is True

    # when the next command runs
    answer = client.echo("user-B")

    # then it gets its own reply: the pool saw the unread one and reconnected (redis-py 8 skips
    # that check while maintenance notifications are on; settings.py turns them off)
    assert answer == b"user-B"
