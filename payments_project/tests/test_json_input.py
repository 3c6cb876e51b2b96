"""The JSON input guards and the fast JSON reading and writing (payments_project.security, .api)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.renderers import JSONRenderer

from payments_project.api import FastJSONRenderer, json_bytes
from payments_project.security import (
    UNPARSED,
    BadInput,
    BoundedJSONParser,
    json_body_check,
    json_loads,
    orjson_loads_bounded,
)

DEPTH_CASES = {
    "three deep": (b"[[[]]]", False),
    "four deep": (b"[[[[]]]]", True),
    "siblings then deeper": (b"[[][[]]]", False),
    "a deeper sibling": (b"[[][[[]]]]", True),
    "brackets in a string": (b'["[[[[[", [], {}]', False),
    "an escaped quote before brackets": (b'{"a": "\\"[[[[", "b": [[1]]}', False),
    "an escaped backslash before the quote": (b'{"a": "\\\\", "b": [[[1]]]}', True),
    "unclosed, too deep": (b"[[[[", True),
    "unclosed, deep enough": (b"[[[", False),
    "closed before opened": (b"]]]][[[", False),
    "mixed kinds, shallow": (b"[}{]", False),
    "mixed kinds, deep": (b"[{[{]}]}", True),
    "deep, then an unclosed string of escaped quotes": (b"[[[[" + b'"' + b'\\"' * 1000, True),
    "shallow, then an unclosed string holding brackets": (b'[[["' + b"[[[[" * 1000, False),
}


@pytest.mark.parametrize(("body", "refused"), DEPTH_CASES.values(), ids=DEPTH_CASES.keys())
def test_depth_is_counted_outside_strings(body: bytes, refused: bool) -> None:
    # when a body is checked against a depth of 3
    try:
        json_body_check(body, max_depth=3)
        answer = False
    except BadInput as exc:
        answer = True
        assert exc.message == "JSON nested deeper than 3 levels."

    # then
    assert answer is refused


def _parse(body: bytes, encoding: str = "utf-8") -> Any:
    return BoundedJSONParser().parse(io.BytesIO(body), "application/json", {"encoding": encoding})


PARSE_CASES = {
    "an event": b'{"feature": "api", "quantity": 3, "metadata": {"a": [1.5, null, true]}}',
    "the largest 64-bit integer": b"[9223372036854775807, -9223372036854775808]",
    "18 digits": b"[123456789012345678]",
    "19 digits in a string": b'{"key": "order-1234567890123456789"}',
    "19 digits split by a point": b"[1234567890.123456789]",
    "a repeated key": b'{"a": 1, "a": 2}',
    "a lone surrogate": b'["\\ud800"]',
    "an escaped backslash then u0000": b'["\\\\u0000"]',
    "unicode": '{"name": "Zoë 😀"}'.encode(),
}


@pytest.mark.parametrize("body", PARSE_CASES.values(), ids=PARSE_CASES.keys())
def test_the_parser_reads_what_the_bounded_json_reader_reads(body: bytes) -> None:
    assert _parse(body) == json_loads(body.decode())


REFUSED_CASES = {
    "past 64 bits": (b"[9223372036854775808]", ParseError),
    "past 64 bits negative": (b"[-9223372036854775809]", ParseError),
    "past 64 unsigned bits (orjson reads a float)": (b"[18446744073709551616]", ParseError),
    "an infinite float": (b"[1e400]", ParseError),
    "NaN": (b"[NaN]", ParseError),
    "not JSON": (b"{nope", ParseError),
    "a NUL escape": (b'{"a": ["x\\u0000y"]}', ValidationError),
    "a NUL escape in a key": (b'{"a\\u0000": 1}', ValidationError),
}


def test_orjson_reads_a_body_unless_it_holds_a_run_of_19_digits() -> None:
    # given bodies with runs of 18 and 19 digits, in numbers and in strings
    bodies = [b"[123456789012345678]", b"[1234567890123456789]", b'["a0123456789012345678"]', b"[0.5, 9]"]

    # when each is read by orjson where it can say
    answers = [orjson_loads_bounded(body) for body in bodies]

    # then the 19-digit runs are left to json_loads, the others read
    assert answers == [[123456789012345678], UNPARSED, UNPARSED, [0.5, 9]]


@pytest.mark.parametrize(("body", "error"), REFUSED_CASES.values(), ids=REFUSED_CASES.keys())
def test_the_parser_refuses_what_the_bounded_json_reader_refuses(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        _parse(body)


def test_a_body_in_another_charset_is_decoded_with_it() -> None:
    assert _parse('{"name": "Zoë"}'.encode("latin-1"), "latin-1") == {"name": "Zoë"}


@pytest.mark.parametrize("charset", ["utf-7", "cp037", "utf-16"])
def test_a_nul_escape_spelled_in_another_charset_is_refused(charset: str) -> None:
    with pytest.raises(ValidationError):
        _parse('{"a": "x\\u0000y"}'.encode(charset), charset)


RENDER_CASES = {
    "results": {"results": [{"status": "recorded", "used": 3, "over_limit": False, "code": None}]},
    "unicode and separators": {"text": 'Zoë \u2028 \u2029 😀 "quoted" \\ /'},
    "punctuation sharing their lead bytes": {"text": "\u2026 \u2013 \u2018quoted\u2019 \u20ac 9"},
    "an empty list": [],
}


@pytest.mark.parametrize("data", RENDER_CASES.values(), ids=RENDER_CASES.keys())
def test_the_fast_renderer_writes_the_bytes_of_drfs(data: Any) -> None:
    assert FastJSONRenderer().render(data) == JSONRenderer().render(data)
    assert json_bytes(data) == JSONRenderer().render(data)


def test_values_orjson_would_write_its_own_way_are_written_by_drf() -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    data = {"at": datetime(2026, 11, 30, 8, 0, tzinfo=UTC), "amount": Decimal("1.50")}

    assert json_bytes(data) == JSONRenderer().render(data) == b'{"at":"2026-11-30T08:00:00Z","amount":1.5}'


def test_an_indented_answer_is_drfs() -> None:
    rendered = FastJSONRenderer().render({"a": 1}, "application/json; indent=2", {})

    assert rendered == b'{\n  "a": 1\n}'


def _guarded(body: bytes, charset: str) -> tuple[int, bytes]:
    """The input guard's answer to a JSON body in `charset` (204: let through)."""
    from django.http import HttpResponse
    from django.test import RequestFactory

    from payments_project.security import InputGuardMiddleware

    request = RequestFactory().generic(
        "POST", "/api/v1/usage/events/", body, content_type=f"application/json; charset={charset}"
    )
    response = InputGuardMiddleware(lambda _: HttpResponse(status=204))(request)
    return response.status_code, response.content


CHARSET_CASES = {
    "deep in cp037 (its brackets are other bytes)": ("[" * 900 + "]" * 900, "cp037", 400, b"nested deeper"),
    "deep in UTF-7": ('{"a": ' + "[" * 40 + "]" * 40 + "}", "utf-7", 400, b"nested deeper"),
    "shallow UTF-16 (NUL bytes, no NUL character)": ('{"a": 1}', "utf-16", 204, b""),
    "a NUL character in cp037": ('{"a": "x\x00y"}', "cp037", 400, b"must not contain NUL"),
    "latin-1": ('{"name": "Zoë"}', "latin-1", 204, b""),
}


@pytest.mark.parametrize(
    ("text", "charset", "status", "said"), CHARSET_CASES.values(), ids=CHARSET_CASES.keys()
)
def test_the_guard_reads_a_body_in_its_declared_charset(
    text: str, charset: str, status: int, said: bytes
) -> None:
    answer, body = _guarded(text.encode(charset), charset)

    assert answer == status
    assert said in body


def test_an_unknown_charset_is_415_and_bytes_not_in_the_charset_400() -> None:
    unknown = _guarded(b'{"a": 1}', "x-nope")
    broken = _guarded(b'{"a":1}', "utf-16")  # an odd number of bytes

    assert unknown == (415, unknown[1])
    assert b"unsupported_media_type" in unknown[1]
    assert broken[0] == 400
    assert b"is not valid utf-16" in broken[1]
