"""entitlements.cache: the snapshot's field layout, as Python and the hot path's Lua read it."""

from __future__ import annotations

from django_redis import get_redis_connection

from entitlements import cache


def test_the_lua_read_is_the_hmget_of_snapshot_fields_with_usage_only_for_codes_held() -> None:
    # given a snapshot holding three of five codes, with usage fields for two held codes and for
    # one it does not hold
    redis = get_redis_connection("default")
    codes = ["export", "api_calls", "a:b", "x" * 64, "Zoë-😀"]
    redis.delete("snapshot-test")
    redis.hset(
        "snapshot-test",
        mapping={
            cache.META_FIELD: "{}",
            "export": "e",
            "api_calls": "a",
            "Zoë-😀": "z",
            cache.usage_field("api_calls"): "1:2:0:3",
            cache.usage_field("Zoë-😀"): "1:5:0:1",
            cache.usage_field("a:b"): "1:9:0:1",
        },
    )
    script = cache.snapshot_read_lua(key="KEYS[1]", codes="ARGV[1]", into="read") + "return read"

    # when Redis reads them as the hot path does, and Python as cache.snapshot_read does
    by_lua = redis.eval(script, 1, "snapshot-test", cache.snapshot_codes_arg(codes))
    by_hmget = redis.hmget("snapshot-test", cache.snapshot_fields(codes))

    # then both answer in snapshot_fields' order, the usage of a code not held left out by Lua
    assert by_hmget == [b"{}", b"e", b"a", None, None, b"z", None, b"1:2:0:3", b"1:9:0:1", None, b"1:5:0:1"]
    assert by_lua == [*by_hmget[:8], None, None, b"1:5:0:1"]
    redis.delete("snapshot-test")
