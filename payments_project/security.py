"""Bad input refused before any view runs: body size, JSON nesting and numbers, NUL characters.

Classes of input rather than fields: whatever a view does with its input, a body over
API_MAX_BODY_BYTES, JSON nested deeper than API_MAX_JSON_DEPTH (Python's parser would raise
RecursionError: a 500), a JSON integer outside 64 bits (no column or Stripe field holds one) or a
NUL character (PostgreSQL text refuses it: a 500) never reaches it. The middleware runs for every
URL, the signed Stripe webhook included (its body is limited before its signature is checked). The
answers are 4xx in the API's error format. See docs/security.md.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import json
import logging
import math
import re
from collections.abc import Callable
from typing import Any

import orjson
from django.conf import settings
from django.db import DataError, Error, IntegrityError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.debug import SafeExceptionReporterFilter
from django.views.decorators.debug import sensitive_variables
from rest_framework.exceptions import ErrorDetail, ParseError, ValidationError
from rest_framework.parsers import JSONParser

from payments_project.api import error_answer, error_body

logger = logging.getLogger(__name__)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# A JSON string (escapes included) or one bracket: the brackets outside strings give the depth.
# The closing quote is optional: an unclosed string runs to the end of the body (for any parser all
# of it is inside that string) and is read once, where requiring the quote made the regex scan to
# the end again from every quote (minutes for a 1 MiB body of escaped quotes).
_JSON_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_BRACKET_PAIR = re.compile(rb"[\[{][\]}]")


class BadInput(ValueError):
    """Input refused before parsing: `status` and `code` of the answer, `field` it is about."""

    def __init__(
        self, message: str, *, status: int = 400, code: str = "validation_error", field: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.field = field

    def response(self) -> JsonResponse:
        fields = {self.field: [{"code": "invalid", "message": self.message}]} if self.field else None
        return JsonResponse(error_body(self.code, self.message, fields), status=self.status)


@functools.lru_cache(maxsize=8)
def _openers_run(length: int) -> re.Pattern[bytes]:
    return re.compile(rb"[\[{]{%d}" % length)


def json_body_check(body: bytes, *, max_depth: int | None = None) -> None:
    """BadInput for a JSON body nested deeper than `max_depth` (brackets inside strings do not
    count); anything else (even invalid JSON) is left to the parser."""
    depth_limit = settings.API_MAX_JSON_DEPTH if max_depth is None else max_depth
    if body.count(b"[") + body.count(b"{") <= depth_limit:
        return
    # The brackets outside strings, then the innermost pairs removed once per level, each pass in
    # C (a 1,000-event batch: 0.5 ms, where a Python step per token took 6 ms): balanced brackets
    # are gone after as many passes as they are deep.
    brackets = _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", body))
    too_deep = _openers_run(depth_limit + 1)
    for _ in range(depth_limit):
        if too_deep.search(brackets):  # the usual deep body: found at once, not after every pass
            raise BadInput(f"JSON nested deeper than {depth_limit} levels.", field="body")
        reduced = _BRACKET_PAIR.sub(b"", brackets)
        if not reduced:
            return
        if reduced == brackets:
            break  # unbalanced: the exact walk below says how deep
        brackets = reduced
    else:
        if _BRACKET_PAIR.search(brackets):
            raise BadInput(f"JSON nested deeper than {depth_limit} levels.", field="body")
    depth = 0
    for match in _JSON_TOKENS.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > depth_limit:
                raise BadInput(f"JSON nested deeper than {depth_limit} levels.", field="body")
        elif token in (b"]", b"}"):
            depth -= 1


def nul_path(value: Any, path: str = "") -> str | None:
    """Where parsed JSON holds a NUL character (in a string or a key), as "a.b.0", else None.
    PostgreSQL stores no NUL in text or jsonb: refused as a validation error of that field."""
    if isinstance(value, str):
        return (path or "non_field_errors") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return name.replace("\x00", "\\u0000")
            found = nul_path(item, name)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_path(item, f"{path}.{index}" if path else str(index))
            if found:
                return found
    return None


def bounded_int(text: str) -> int:
    """json's parse_int: integers within 64 bits (the parser turns the ValueError into a 400)."""
    if len(text) > 20:
        raise ValueError("integer out of range")
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("integer out of range")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def bounded_float(text: str) -> float:
    """A JSON number with a fraction or exponent, finite (`1e400` would be infinity)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def json_loads(text: str | bytes) -> Any:
    """json.loads for client input: 64-bit integers and finite numbers only, no NaN/Infinity
    (ValueError otherwise)."""
    return json.loads(text, parse_int=bounded_int, parse_float=bounded_float, parse_constant=_refuse_constant)


UNPARSED = object()
# A run of 19 digits, found as 19 zeros once every digit reads "0": a translation and a substring
# search, ten times faster than the regex [0-9]{19,} (which took longer than the parse itself:
# 13 against 2.6 µs on a 1.4 KB body, 1.4 ms against 0.33 on a 1,000-event batch).
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_DIGITS = b"0" * 19


def orjson_loads_bounded(raw: bytes) -> Any:
    """What json_loads would answer, by orjson (five times faster on a 1,000-event batch), or
    UNPARSED when only json_loads can say: orjson refuses what json_loads refuses (NaN,
    Infinity, an infinite float) and more (lone surrogates, over 1,024 levels), and it reads an
    integer past 64 bits as a float; a body with no run of 19 digits has no such integer."""
    if _LONG_DIGITS in raw.translate(_DIGITS_AS_ZERO):
        return UNPARSED
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return UNPARSED


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser with the bounds above (the middleware already refused deep nesting)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        raw = stream.read()
        utf8 = encoding.lower() in ("utf-8", "utf8")
        data = orjson_loads_bounded(raw) if utf8 else UNPARSED
        if data is UNPARSED:
            try:
                data = json_loads(raw.decode(encoding))
            except (ValueError, RecursionError) as exc:
                raise ParseError(f"JSON parse error - {exc}") from None
        # A NUL in a parsed string can only come from a \u0000 escape (the middleware refused raw
        # NULs): in a UTF-8 body without one there is nothing to look for (another charset may
        # spell the escape in other bytes: its parsed data is always looked through).
        where = nul_path(data) if not utf8 or b"\\u0000" in raw else None
        if where:
            raise ValidationError(
                {where: [ErrorDetail("Null characters are not allowed.", code="null_characters_not_allowed")]}
            )
        return data


def query_has_nul(query: str) -> bool:
    """A raw query string holding a NUL character, plain or percent-encoded."""
    return "\x00" in query or "%00" in query


_UTF8_OR_ASCII = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


def _body_as_utf8(request: HttpRequest) -> bytes:
    """The body's bytes as UTF-8, so the NUL and depth checks read the characters the parser will
    read: a body in another declared charset (the parsers decode with it) is decoded first, where
    its bytes would hide a NUL or a bracket (cp037, UTF-7) or fake one (UTF-16)."""
    body = request.body
    charset = (request.content_params or {}).get("charset", "").strip().lower()
    if not charset or charset in _UTF8_OR_ASCII:
        return body
    try:
        return body.decode(charset).encode("utf-8", "surrogatepass")
    except LookupError:
        message = f"Unknown charset {charset[:40]!r}."
        raise BadInput(message, status=415, code="unsupported_media_type") from None
    except UnicodeError:
        raise BadInput(f"The body is not valid {charset[:40]}.", field="body") from None


class InputGuardMiddleware:
    """Refuses, for every URL: NUL in the path, the query string or the raw body (400), a body
    longer than API_MAX_BODY_BYTES (413), a JSON body nested too deep (400). NUL escaped in JSON
    (\\u0000) is refused by the parsers: DRF's below, the webhook's (billing.stripe.views)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            self._check(request)
        except BadInput as exc:
            return exc.response()
        return self.get_response(request)

    def _check(self, request: HttpRequest) -> None:
        if "\x00" in request.path_info:
            raise BadInput("The path must not contain NUL characters.", field="path")
        if query_has_nul(request.META.get("QUERY_STRING", "")):
            raise BadInput("Query parameters must not contain NUL characters.", field="query")
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise BadInput("Content-Length is not a number.", field="Content-Length") from None
        batch = request.path_info in settings.API_BATCH_PATHS
        limit = settings.API_MAX_BATCH_BODY_BYTES if batch else settings.API_MAX_BODY_BYTES
        if length > limit:
            raise BadInput(f"The body is longer than {limit} bytes.", status=413, code="payload_too_large")
        content_type = request.META.get("CONTENT_TYPE", "").lower()
        if not length or content_type.startswith("multipart/"):
            return
        body = _body_as_utf8(request)
        if b"\x00" in body:
            raise BadInput("The body must not contain NUL characters.", field="body")
        if "json" in content_type:
            json_body_check(body)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """Outside DRF's views (the webhook, health pages), a database refusal of client input is
        answered as the API answers it (payments_project.api.error_answer): 400 or 409, not 500."""
        if not isinstance(exception, (DataError, IntegrityError)) or request.path_info.startswith("/admin/"):
            return None
        return database_refusal_response(exception)


def database_refusal_response(exception: Error) -> JsonResponse:
    """A database error as the API answers it: a refusal of client input 400 or 409, an
    unreachable database 503 with Retry-After; never a 500."""
    answer = error_answer(exception)
    return JsonResponse(answer.body, status=answer.status, headers=answer.headers)


# --- operations endpoints ------------------------------------------------------------------------

# Business data (revenue per currency in /metrics) and configuration (/status, /health's
# components): for operators only when OPS_PROTECTED is on (the production default). The probes'
# /health/live and /health/ready stay open.
OPS_PATHS = frozenset({"/metrics", "/status", "/health"})


def _address_allowed(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(network, strict=False) for network in networks)


@sensitive_variables("expected", "given")
def ops_request_allowed(request: HttpRequest) -> bool:
    """A bearer OPS_TOKEN, or a client address in OPS_ALLOWED_NETWORKS (the peer's address:
    behind a proxy every request comes from the proxy, so use the token there)."""
    expected = settings.OPS_TOKEN
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, given = header.partition(" ")
    if (
        expected
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.strip().encode(), expected.encode())
    ):
        return True
    return _address_allowed(request.META.get("REMOTE_ADDR", ""), settings.OPS_ALLOWED_NETWORKS)


class OpsAccessMiddleware:
    """401 for /metrics, /status and /health without the ops token or an allowed address, when
    settings.OPS_PROTECTED is on."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if settings.OPS_PROTECTED and request.path_info in OPS_PATHS and not ops_request_allowed(request):
            response = JsonResponse(
                error_body("not_authenticated", "An operations token (Authorization: Bearer) is required."),
                status=401,
            )
            response["WWW-Authenticate"] = 'Bearer realm="ops"'
            return response
        return self.get_response(request)


# --- debug pages ---------------------------------------------------------------------------------


class SecretsExceptionReporterFilter(SafeExceptionReporterFilter):
    """settings.DEFAULT_EXCEPTION_REPORTER_FILTER: Django's filter, also hiding Stripe's settings
    by name, and any local variable, in any frame (the Stripe SDK's and dj-stripe's included, which
    no decorator of ours reaches), whose text holds a secret's value: the Stripe keys, the webhook
    secrets of the endpoints, the ops token and Django's SECRET_KEY."""

    hidden_settings = re.compile(
        r"API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|^STRIPE_", re.IGNORECASE
    )

    def _secret_values(self) -> list[str]:
        values = {
            str(getattr(settings, name))
            for name in dir(settings)
            if name.isupper() and re.search(r"SECRET|TOKEN|PASSWORD", name)
        }
        try:
            from djstripe.models import WebhookEndpoint

            values.update(str(secret) for secret in WebhookEndpoint.objects.values_list("secret", flat=True))
        except Exception:
            logger.warning("webhook secrets unreadable for the debug page filter", exc_info=True)
        return [value for value in values if len(value) >= 8]

    def get_traceback_frame_variables(self, request: Any, tb_frame: Any) -> Any:
        variables = super().get_traceback_frame_variables(request, tb_frame)
        secrets = getattr(self, "_secrets", None)
        if secrets is None:
            secrets = self._secrets = self._secret_values()
        cleansed = []
        for name, value in variables:
            try:
                text = repr(value)
            except Exception:  # noqa: BLE001 - an object whose repr fails is hidden, not shown
                text = ""
                value = self.cleansed_substitute
            if any(secret in text for secret in secrets):
                value = self.cleansed_substitute
            cleansed.append((name, value))
        return cleansed
