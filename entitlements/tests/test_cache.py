"""entitlements.cache: the snapshot's field layout, as Python and the hot path's Lua build it."""

from __future__ import annotations

from django_redis import get_redis_connection

from entitlements import cache


def test_the_lua_field_list_is_snapshot_fields() -> None:
    # given codes joined as the hot path sends them
    codes = ["export", "api_calls", "a:b", "x" * 64, "Zoë-😀"]
    script = cache.snapshot_fields_lua(codes="ARGV[1]", into="fields") + "return fields"

    # when Redis builds the field list from them
    built = get_redis_connection("default").eval(script, 0, cache.CODES_SEPARATOR.join(codes))

    # then it is the list Python reads: the meta field, each code, then each code's usage
    assert [field.decode() for field in built] == cache.snapshot_fields(codes)
    assert cache.snapshot_fields(codes)[:2] == ["__meta", "export"]
    assert cache.snapshot_fields(codes)[-1] == "__u:Zoë-😀"
