"""API foundation shared by every app: error format, pagination, rate limits, acting for a user."""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.core.signals import setting_changed
from django.db import DataError, IntegrityError, InterfaceError, OperationalError
from django.dispatch import receiver
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django_ratelimit import core as ratelimit_core
from django_ratelimit.core import get_usage
from django_redis import get_redis_connection
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle

from payments_project.accounts.selectors import can_act_for_any_user, can_read_any_user
from payments_project.errors import DomainError, constraint_name
from payments_project.redis_client import redis_script

if TYPE_CHECKING:  # rest_framework.views imports the throttle below: no import cycle at runtime
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)


def is_printable(value: str) -> bool:
    """No control, format or separator characters beyond the space (NUL, a bidi override, a
    zero-width joiner...), and no U+FFFD: what Django puts for a byte that is not UTF-8 in a
    query string. The one rule of text fields and of the hot paths that answer before them."""
    return value.isprintable() and "\ufffd" not in value


def printable(value: str) -> None:
    """A text field's validator: is_printable."""
    if not is_printable(value):
        raise serializers.ValidationError("Only printable characters.")


# An integer as forms and query strings write one: digits, an optional minus, no more than fit.
_WHOLE_NUMBER_TEXT = re.compile(r"-?[0-9]{1,30}")


class WholeNumberField(serializers.IntegerField):
    """A whole number: a JSON integer, or digits as text (forms and query strings send text).

    DRF's IntegerField also reads 15.0, "15.00" and "1e3": an amount typed in real units ("15.00"
    euros) would be charged as 15 cents, a count given as a float silently rounded. Those, a bool
    (JSON's true is no number) and text with spaces are refused like any invalid integer."""

    text_allowed = True

    def to_internal_value(self, data: Any) -> int:
        if type(data) is int or (
            self.text_allowed and type(data) is str and _WHOLE_NUMBER_TEXT.fullmatch(data)
        ):
            return int(super().to_internal_value(data))
        self.fail("invalid")


class JSONIntegerField(WholeNumberField):
    """A JSON integer only, for the JSON-only endpoints (usage): "3" there is the client's type
    error, not a form's text."""

    text_allowed = False


# DRF's default codes, renamed where ours should say more.
_CODE_NAMES = {"invalid": "validation_error", "throttled": "rate_limited", "error": "error"}


def error_body(
    code: str, message: str, fields: dict[str, Any] | None = None, extra: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    return {"error": {"code": code, "message": message, "fields": fields or {}, **(extra or {})}}


def _field_errors(detail: Any, prefix: str = "") -> dict[str, list[dict[str, str]]]:
    """Flatten DRF's nested ErrorDetail structure into {"a.b": [{"code", "message"}]}."""
    out: dict[str, list[dict[str, str]]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            out.update(_field_errors(value, name))
    elif isinstance(detail, list):
        if all(isinstance(item, exceptions.ErrorDetail) for item in detail):
            out[prefix or "non_field_errors"] = [
                {"code": str(item.code), "message": str(item)} for item in detail
            ]
        else:
            for index, item in enumerate(detail):
                out.update(_field_errors(item, f"{prefix}.{index}" if prefix else str(index)))
    elif isinstance(detail, exceptions.ErrorDetail):
        out[prefix or "non_field_errors"] = [{"code": str(detail.code), "message": str(detail)}]
    return out


class ErrorAnswer(NamedTuple):
    status: int
    body: dict[str, dict[str, Any]]
    headers: dict[str, str]


def error_answer(exc: BaseException) -> ErrorAnswer:
    """Status, body and headers of any exception in the error format.

    The one rendering of errors: DRF's exception handler below and the entitlement hot path
    (entitlements.hotpath, which answers without DRF) both call it, so their bytes agree.
    """
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database is unreachable: say so, never guess (e.g. an entitlement answer).
        logger.error("database unavailable: %s", exc)
        return ErrorAnswer(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            error_body("database_unavailable", "The service cannot reach its database; retry shortly."),
            {"Retry-After": "5"},
        )
    if isinstance(exc, DomainError):
        return ErrorAnswer(
            exc.status_code, error_body(exc.code, exc.message, exc.fields, exc.extra), exc.headers
        )
    if isinstance(exc, DataError):
        # A value the column cannot hold that validation let through: the client's input, never a 500.
        logger.warning("database refused a value: %s", exc)
        return ErrorAnswer(
            status.HTTP_400_BAD_REQUEST,
            error_body("invalid_value", "A value is out of range or too long for what it is stored in."),
            {},
        )
    if isinstance(exc, IntegrityError):
        # A constraint no service turned into its own error (the services name the ones they expect).
        logger.warning("database constraint refused a write: %s", exc)
        extra = {"constraint": constraint_name(exc)} if constraint_name(exc) else {}
        return ErrorAnswer(
            status.HTTP_409_CONFLICT,
            error_body("conflict", "The request conflicts with the current state.", extra=extra),
            {},
        )
    if isinstance(exc, SuspiciousOperation):
        # Django's refusals of a request's shape (more query or form fields than
        # DATA_UPLOAD_MAX_NUMBER_FIELDS, a body past DATA_UPLOAD_MAX_MEMORY_SIZE...), raised when
        # a view first reads them: the client's input, never a 500.
        logger.warning("request refused: %s", exc)
        if isinstance(exc, RequestDataTooBig):
            return ErrorAnswer(
                status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                error_body("payload_too_large", "The request body is too large."),
                {},
            )
        if isinstance(exc, TooManyFieldsSent):
            limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
            message = f"The request has more than {limit} query or form fields."
        else:
            message = "The request is malformed."
        return ErrorAnswer(status.HTTP_400_BAD_REQUEST, error_body("bad_request", message), {})
    # Django's own refusals, as DRF's handler converts them (with the default messages).
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        logger.exception("unhandled error in API view", exc_info=exc)
        return ErrorAnswer(
            status.HTTP_500_INTERNAL_SERVER_ERROR,
            error_body("internal_error", "An unexpected error occurred."),
            {},
        )
    # The headers DRF's handler sets: APIView.handle_exception puts auth_header on a 401's
    # exception, Throttled carries its wait (a whole number of seconds).
    headers: dict[str, str] = {}
    auth_header = getattr(exc, "auth_header", None)
    if auth_header:
        headers["WWW-Authenticate"] = str(auth_header)
    wait = getattr(exc, "wait", None)
    if wait:
        headers["Retry-After"] = str(int(wait))  # DRF writes "%d" % wait
    if isinstance(exc, exceptions.ValidationError):
        body = error_body("validation_error", "The request has invalid fields.", _field_errors(exc.detail))
    else:
        default_code = str(getattr(exc, "default_code", "error"))
        code = _CODE_NAMES.get(default_code, default_code)
        detail = exc.detail
        message = str(detail) if not isinstance(detail, (dict, list)) else str(exc.default_detail)
        body = error_body(code, message)
    return ErrorAnswer(exc.status_code, body, headers)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """settings.REST_FRAMEWORK's EXCEPTION_HANDLER: every error in the error format (error_answer)."""
    from rest_framework.views import set_rollback

    answer = error_answer(exc)
    if isinstance(exc, (exceptions.APIException, Http404, DjangoPermissionDenied, DataError, IntegrityError)):
        set_rollback()  # as DRF's handler does for these: an ATOMIC_REQUESTS transaction rolls back
    return Response(answer.body, status=answer.status, headers=answer.headers)


def json_error_view(
    status_code: int, code: str, message: str
) -> Callable[[HttpRequest, Exception | None], JsonResponse]:
    """Django-level handlers (404/500 outside DRF views) answer in the same format. Exempt from
    the CSRF check: it changes nothing, and a POST to an unknown API route is a 404, not the HTML
    "CSRF verification failed" page."""

    @csrf_exempt
    def view(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
        return JsonResponse(error_body(code, message), status=status_code)

    return view


def json_bytes(data: Any) -> bytes:
    """Bytes as DRF's JSONRenderer writes them (compact, UTF-8, U+2028/2029 escaped).

    orjson writes what json.dumps(ensure_ascii=False, separators=(",", ":")) writes for these
    str/int/bool/None trees (tested against DRF's renderer), about ten times faster; anything else
    (a datetime, a Decimal, lazy text) is written by DRF's renderer itself. Floats are the one
    difference (orjson writes 1e-7 where json writes 1e-07): no answer written here holds one.
    """
    try:
        body = orjson.dumps(data, option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS)
    except TypeError:  # a value orjson does not know or would write its own way
        body = JSONRenderer().render(data)
    # The UTF-8 lead bytes of U+2028/U+2029 (and other punctuation); looked for one byte first,
    # which is a memchr: the two-byte search took longer than orjson's dumps of the body.
    if b"\xe2" in body and b"\xe2\x80" in body:
        body = body.replace("\u2028".encode(), b"\\u2028").replace("\u2029".encode(), b"\\u2029")
    return body


class FastJSONRenderer(JSONRenderer):
    """DRF's JSON renderer by json_bytes, for the large answers (a 1,000-event batch): the same
    bytes, without indentation or another media type's parameters (it falls back to DRF's)."""

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        if data is None:
            return b""
        if self.get_indent(accepted_media_type or "", renderer_context or {}) is not None:
            return super().render(data, accepted_media_type, renderer_context)
        return json_bytes(data)


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request: Request) -> int | None:
        """`page_size` as a whole number from 1, at most max_page_size (a larger one is capped).
        DRF read it with int() ("1_0" was 10, other scripts' digits read too) and fell back to the
        default for anything it could not read; here a bad one is a 400 naming it."""
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not _WHOLE_NUMBER_TEXT.fullmatch(raw) or int(raw) < 1:
            raise exceptions.ValidationError(
                {self.page_size_query_param: [f"A whole number from 1 to {self.max_page_size} is required."]}
            )
        return min(int(raw), self.max_page_size)


def ratelimit_count_lua(*, counter: str, ttl: str) -> str:
    """Lua counting one request in django-ratelimit's counter `counter` (e.g. "KEYS[1]"), whose ttl
    is `ttl` (e.g. "ARGV[1]"), into the variable `count`, which the script has declared.

    INCR then EXPIRE when it was just made (or has no ttl): what django-ratelimit's cache.add +
    cache.incr do, atomically. Both scripts that count requests are built with it: the throttle's
    below and the entitlement hot path's (which also reads the snapshot in the same round trip).
    """
    return (
        f"count = redis.call('INCR', {counter})\n"
        f"if count == 1 or redis.call('TTL', {counter}) < 0 then\n"
        f"    redis.call('EXPIRE', {counter}, tonumber({ttl}))\n"
        "end\n"
    )


# KEYS[1] the counter; ARGV[1] its ttl.
_RATELIMIT_INCR = "local count\n" + ratelimit_count_lua(counter="KEYS[1]", ttl="ARGV[1]") + "return count\n"


def _ratelimit_usage(request: Request, scope: str, rate: str) -> dict[str, Any] | None:
    """django-ratelimit's get_usage(increment=True) in ONE Redis round trip instead of two.

    Same key (its own key functions: group, rate, user_or_ip, window with its jitter), same counter
    encoding (a plain integer), same ttl (period + its fudge), same answer dict. Falls back to
    get_usage itself when the ratelimit cache is not django-redis.
    """
    cache_name = ratelimit_cache_name()
    try:
        conn = get_redis_connection(cache_name)
    except NotImplementedError:
        return get_usage(request, group=f"api:{scope}", key="user_or_ip", rate=rate, increment=True)
    key, limit, ttl, window = ratelimit_counter(ratelimit_core.user_or_ip(request), scope, rate, cache_name)
    script = redis_script(_RATELIMIT_INCR, alias=cache_name)
    return ratelimit_usage(count=int(script(keys=[key], args=[ttl], client=conn)), limit=limit, window=window)


def ratelimit_rate(scope: str) -> str | None:
    """The rate of a view scope (settings.RATELIMIT_RATES, else its default); None: no limit
    (none set, or RATELIMIT_ENABLE off)."""
    if not settings.RATELIMIT_ENABLE:
        return None
    rates = settings.RATELIMIT_RATES
    return rates.get(scope, rates.get("default")) or None


def ratelimit_cache_name() -> str:
    """The cache that holds the counters (django-ratelimit's RATELIMIT_USE_CACHE)."""
    return str(settings.RATELIMIT_USE_CACHE)


def ratelimit_usage(*, count: int, limit: int, window: int) -> dict[str, Any]:
    """get_usage's answer for a counter that now holds `count`, in the window ending at `window`."""
    return {
        "count": count,
        "limit": limit,
        "should_limit": count > limit,
        "time_left": window - int(time.time()),
    }


def ratelimit_wait(usage: dict[str, Any] | None) -> int | None:
    """None: the request may go on. Else the seconds to wait (DRF's Throttled and Retry-After):
    those left in the window, at least one."""
    if usage is None or not usage["should_limit"]:
        return None
    return max(1, int(usage["time_left"]))


def ratelimit_counter(value: str, scope: str, rate: str, cache_name: str) -> tuple[str, int, int, int]:
    """(counter key, limit, ttl, window end) of django-ratelimit's counter for `value` (user_or_ip).

    The key functions are django-ratelimit's own (group, rate, value, window with its jitter), the
    key goes through the cache's make_key, the ttl is the period plus its fudge.
    """
    limit, period = _rate_split(rate)
    window = ratelimit_core._get_window(value, period)
    key = _counter_key(value, scope, rate, cache_name, window)
    return key, limit, period + ratelimit_core.EXPIRATION_FUDGE, window


@functools.lru_cache(maxsize=64)
def _rate_split(rate: str) -> tuple[int, int]:
    return ratelimit_core._split_rate(rate)


# The key is a SHA-256 of the same inputs for a whole window: worth remembering on the entitlement
# hot path. Cleared when a setting changes (prefix, hash, caches), e.g. in tests.
@functools.lru_cache(maxsize=16_384)
def _counter_key(value: str, scope: str, rate: str, cache_name: str, window: int) -> str:
    key = ratelimit_core._make_cache_key(f"api:{scope}", window, rate, value, ratelimit_core.ALL)
    return str(caches[cache_name].make_key(key))


@receiver(setting_changed)
def _counter_keys_forget(**_: Any) -> None:
    _counter_key.cache_clear()


class RatelimitThrottle(BaseThrottle):
    """django-ratelimit counters in the shared cache (Redis), one budget per view scope.

    A view sets `ratelimit_scope`; its rate comes from settings.RATELIMIT_RATES (env RATELIMIT_RATES).
    DRF turns a refusal into 429 with Retry-After = seconds left in the current window. The counter
    is django-ratelimit's, counted in one Redis round trip (see _ratelimit_usage).
    """

    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request: Request, view: APIView) -> bool:
        scope = getattr(view, "ratelimit_scope", "default")
        rate = ratelimit_rate(scope)
        if not rate:
            return True
        try:
            usage = _ratelimit_usage(request, scope, rate)
        except Exception:
            logger.warning("rate limiter unavailable; allowing request", exc_info=True)
            return True
        self._wait = ratelimit_wait(usage)
        return self._wait is None

    def wait(self) -> float | None:
        return self._wait


def _wanted_id(user_id: Any) -> int:
    # Read as WholeNumberField reads it: int() would also take other scripts' digits, " 5", "+5", "1_0" (10).
    text = str(user_id)
    if type(user_id) is bool or not _WHOLE_NUMBER_TEXT.fullmatch(text):
        raise exceptions.ValidationError({"user_id": ["A valid integer is required."]})
    wanted = int(text)  # at most 30 digits (the pattern): the range check below refuses the rest
    # One bound for every id in the API (64-bit, the widest column). auth_user's own id is 32-bit:
    # a larger id names nobody, and Django answers a look-up past a column's range with no row.
    if not 1 <= wanted <= 2**63 - 1:
        raise exceptions.ValidationError({"user_id": ["An integer from 1 to 2^63-1 is required."]})
    return wanted


def _split(request: Request, user_ids: Collection[Any]) -> tuple[dict[Any, Any], dict[Any, int]]:
    """({user_id: the caller} for the ids naming the caller, {user_id: wanted id} for the others)."""
    own: dict[Any, Any] = {}
    others: dict[Any, int] = {}
    for user_id in user_ids:
        if user_id in (None, ""):
            own[user_id] = request.user
            continue
        wanted = _wanted_id(user_id)
        if wanted == request.user.pk:
            own[user_id] = request.user
        else:
            others[user_id] = wanted
    return own, others


def _subjects(
    request: Request, user_ids: Collection[Any], *, may: Callable[[Any], bool], refusal: str
) -> dict[Any, Any]:
    """{each given user_id: the user it names}; None or "" names the caller. One query for all the
    others, so a batch naming a hundred users costs what one does."""
    out, others = _split(request, user_ids)
    if not others:
        return out
    if not may(request.user):
        raise exceptions.PermissionDenied(refusal)
    found = get_user_model().objects.in_bulk(set(others.values()))
    for user_id, wanted in others.items():
        if wanted not in found:
            raise exceptions.NotFound("No such user.")
        out[user_id] = found[wanted]
    return out


def _subject(request: Request, user_id: Any, *, may: Callable[[Any], bool], refusal: str) -> Any:
    return _subjects(request, [user_id], may=may, refusal=refusal)[user_id]


def subject_user(request: Request, user_id: Any) -> Any:
    """The user a request acts for (writes): the caller, or `user_id` when the caller may act for
    anyone (service accounts and superusers)."""
    return _subject(
        request,
        user_id,
        may=can_act_for_any_user,
        refusal="Only service accounts and superusers may act for another user.",
    )


def subject_user_for_write(request: Request, body_user_id: int | None) -> Any:
    """subject_user for a write that names its user in the body (`user_id`, as the usage endpoints
    take it) or in the query string; a body's `user_id` was once ignored, and the caller charged
    instead. Named in both, they must agree."""
    query_user_id = request.query_params.get("user_id")
    if body_user_id is None:
        return subject_user(request, query_user_id)
    if query_user_id is not None and _wanted_id(query_user_id) != body_user_id:
        raise exceptions.ValidationError({"user_id": ["The body and the query string name different users."]})
    return subject_user(request, body_user_id)


def subject_user_ids(request: Request, user_ids: Collection[Any]) -> dict[Any, int]:
    """subject_user for many ids at once (a usage batch), as ids: {user_id: the id of the user it
    names}; one query checks that the others exist, without loading them."""
    own, others = _split(request, user_ids)
    out = {user_id: user.pk for user_id, user in own.items()}
    if not others:
        return out
    if not can_act_for_any_user(request.user):
        raise exceptions.PermissionDenied("Only service accounts and superusers may act for another user.")
    found = set(get_user_model().objects.filter(pk__in=set(others.values())).values_list("pk", flat=True))
    for user_id, wanted in others.items():
        if wanted not in found:
            raise exceptions.NotFound("No such user.")
        out[user_id] = wanted
    return out


def subject_user_for_read(request: Request, user_id: Any) -> Any:
    """The user a read is about: the caller, or `user_id` when the caller may read anyone's data
    (support and finance staff too). Never use it for a write: that is `subject_user`."""
    return _subject(
        request,
        user_id,
        may=can_read_any_user,
        refusal="Only staff and service accounts may read another user's data.",
    )


# Stripe's ids (cus_..., pi_..., pm_...) are far shorter; the columns holding them are 255 long.
STRIPE_ID_MAX_LENGTH = 255


def column_max_length(model: Any, field: str) -> int:
    """The max_length of a model's column: an input field stored there is bounded by it."""
    return int(model._meta.get_field(field).max_length)


# Ours are kept short enough that every key derived from them (e.g. "payment:<user id>:<key>:confirm")
# stays within Stripe's 255 characters and our columns: a longer one is the client's error, refused
# here rather than by Stripe (where it would look like an outage).
IDEMPOTENCY_KEY_MAX_LENGTH = 200


def idempotency_key_header(request: Request) -> str | None:
    """The request's `Idempotency-Key` header (None when absent or empty), or a 400 naming it."""
    raw = request.headers.get("Idempotency-Key") or ""
    if not raw:
        return None
    if len(raw) > IDEMPOTENCY_KEY_MAX_LENGTH or not (raw.isascii() and raw.isprintable()):
        message = f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters."
        raise DomainError(
            message,
            code="validation_error",
            fields={"Idempotency-Key": [{"code": "invalid", "message": message}]},
        )
    return raw
