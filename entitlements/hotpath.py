"""GET entitlements/check and POST entitlements/bulk-check answered without DRF when warm.

`check_fast` / `bulk_check_fast` are called by entitlements.middleware.EntitlementHotPathMiddleware,
ahead of the session, CSRF, authentication and messages middleware (a token request uses none of
them) and of URL resolution. They answer only the common, warm case:

- a well-formed `Authorization: Token <key>` header, no `format` parameter, an Accept header that
  is absent, `*/*` or `application/json`, input that DRF's serializers would take as is (see
  `_simple_codes`), and `user_id` absent or the caller's own id;
- and ONE Redis round trip (a Lua script, EVALSHA) finds the token's cached user snapshot active
  and belonging to the user we expect for that token: the script then also counts the request in
  django-ratelimit's counter (same key, window and ttl as payments_project.api._ratelimit_usage)
  and HMGETs the user's entitlement snapshot (`__meta` + the codes).

Anything else returns None, before any Redis side effect, and the request goes on untouched
through the whole middleware stack to the DRF viewset action (EntitlementViewSet.check /
bulk_check), so errors, session auth (with DRF's CSRF check), Redis down, a cold token, `user_id`
for another user, odd input... behave exactly as before.

Which user a token belongs to is remembered per process (`_HINTS`), learnt from a successful DRF
answer (`learning_view` wraps the DRF actions) or, on a token's first request in
this worker, from its cached token snapshot (one GET more, instead of the DRF path): it only
chooses which keys the script reads. The script checks that the token snapshot names that user
(and that it is active) before counting or reading anything, so a stale hint only costs a
delegation, never a wrong answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from django_redis import get_redis_connection
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer

from entitlements import cache
from entitlements.apis import MAX_BULK_FEATURES, EntitlementViewSet
from entitlements.metrics import (
    entitlement_cache_hits_total,
    entitlement_check_duration_seconds,
    entitlement_checks_allowed,
    entitlement_checks_denied,
)
from entitlements.selectors import check_results, entitlement_check
from payments_project.api import error_body, ratelimit_counter, ratelimit_rate
from payments_project.authentication import REDIS_ERRORS, token_cache_keys
from payments_project.errors import DomainError

logger = logging.getLogger(__name__)

View = Callable[..., HttpResponseBase]

# KEYS[1] token snapshot, KEYS[2] entitlement snapshot, KEYS[3] rate counter (absent: no limit).
# ARGV[1] "<user id>|1|": the start of an ACTIVE snapshot of the expected user; ARGV[2] the counter's
# ttl; ARGV[3..] the HMGET fields. {0}: not that user (or no snapshot), nothing done. Else
# {1, count or -1, HMGET values...}; the counter is INCR + EXPIRE exactly like _RATELIMIT_INCR.
_CHECK = """
local token = redis.call('GET', KEYS[1])
if not token or string.sub(token, 1, string.len(ARGV[1])) ~= ARGV[1] then return {0} end
local count = -1
if KEYS[3] then
    count = redis.call('INCR', KEYS[3])
    if count == 1 or redis.call('TTL', KEYS[3]) < 0 then
        redis.call('EXPIRE', KEYS[3], tonumber(ARGV[2]))
    end
end
local values = redis.call('HMGET', KEYS[2], unpack(ARGV, 3))
local out = {1, count}
for i = 1, #values do out[i + 2] = values[i] end
return out
"""

_HINTS: dict[str, int] = {}  # token key -> id of its user, learnt from DRF answers
_HINTS_MAX = 100_000
_ACCEPT_OK = frozenset({"", "*/*", "application/json"})
_SCOPE = EntitlementViewSet.ratelimit_scope
_script: dict[int, Any] = {}  # id(redis client) -> its registered Script


def _token_key(request: HttpRequest) -> str | None:
    """The key of a plain `Token <key>` header, split as DRF splits it (bytes, ASCII whitespace
    only: a no-break space is not a separator there), else None."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    try:
        parts = header.encode("iso-8859-1").split()
    except UnicodeEncodeError:
        return None
    if len(parts) != 2 or parts[0].lower() != b"token" or not parts[1].isascii():
        return None
    return parts[1].decode()


def _user_for(token_key: str) -> int | None:
    """Which user the token belongs to: this process's hint, else its cached token snapshot.

    The snapshot ("<user id>|<is_active>|...") is written by CachedTokenAuthentication after it
    checked the token in the database; reading it (one GET) on a token's first request in this
    worker spares that request the whole DRF path. None: not cached, inactive, or Redis down.
    """
    user_id = _HINTS.get(token_key)
    if user_id is not None:
        return user_id
    try:
        snapshot = get_redis_connection("default").get(token_cache_keys(token_key)[0])
    except REDIS_ERRORS:
        return None
    fields = snapshot.split(b"|", 2) if isinstance(snapshot, bytes) else []
    if len(fields) < 2 or not fields[0].isdigit() or fields[1] != b"1":
        return None
    user_id = int(fields[0])
    _hint_store(token_key, user_id)
    return user_id


def _hint_store(token_key: str, user_id: int) -> None:
    if len(_HINTS) >= _HINTS_MAX:
        _HINTS.clear()
    _HINTS[token_key] = user_id


def _simple_codes(values: Sequence[Any]) -> bool:
    """Feature codes DRF's CharField(max_length=64) keeps unchanged (no trim, no error): strings
    of 1 to 64 printable characters (so no NUL, no lone surrogate) without surrounding spaces."""
    for value in values:
        if type(value) is not str or not 0 < len(value) <= 64 or not value.isprintable():
            return False
        if value != value.strip():
            return False
    return True


def _fast_allowed(request: HttpRequest) -> bool:
    return (
        "format" not in request.GET
        and request.META.get("HTTP_ACCEPT", "") in _ACCEPT_OK
        and "django_redis" in settings.CACHES["default"]["BACKEND"]
    )


def _json(status: int, data: Any, headers: dict[str, str] | None = None) -> HttpResponse:
    """Bytes as DRF's JSONRenderer writes them (compact, UTF-8, U+2028/2029 escaped).

    orjson writes what json.dumps(ensure_ascii=False, separators=(",", ":")) writes for these
    str/int/bool/None trees (tested against DRF's renderer), about ten times faster.
    """
    try:
        body = orjson.dumps(data)
    except TypeError:  # a value orjson does not know (Decimal, lazy text in an error's extra)
        body = JSONRenderer().render(data)
    if b"\xe2\x80" in body:  # the UTF-8 lead bytes of U+2028/U+2029 (and other punctuation)
        body = body.replace("\u2028".encode(), b"\\u2028").replace("\u2029".encode(), b"\\u2029")
    response = HttpResponse(body, status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _warm_read(token_key: str, user_id: int, codes: Sequence[str]) -> tuple[bool, int, list[Any]] | None:
    """ONE round trip: (limited, seconds left in the window, [meta, *codes] raw).

    None: not warm (or Redis unreachable), nothing was counted: the caller delegates.
    """
    rate = ratelimit_rate(_SCOPE) if getattr(settings, "RATELIMIT_ENABLE", True) else None
    if rate and getattr(settings, "RATELIMIT_USE_CACHE", "default") != "default":
        return None  # the counter lives elsewhere: the DRF path counts it
    keys = [token_cache_keys(token_key)[0], cache.snapshot_key(user_id)]
    ttl, limit, window = 0, 0, 0
    if rate:
        counter_key, limit, ttl, window = ratelimit_counter(str(user_id), _SCOPE, rate, "default")
        keys.append(counter_key)
    try:
        conn = get_redis_connection("default")
        script = _script.get(id(conn)) or _script_prepare(conn)
        out = script(keys=keys, args=[f"{user_id}|1|", ttl, cache.META_FIELD, *codes], client=conn)
    except REDIS_ERRORS:
        return None  # Redis down or not Redis: the DRF path falls back to the database
    if not out or out[0] != 1:
        return None
    count = int(out[1])
    return bool(rate) and count > limit, window - int(time.time()), list(out[2:])


def _script_prepare(conn: Any) -> Any:
    script = _script[id(conn)] = conn.register_script(_CHECK)
    return script


def _answer(user_id: int, codes: Sequence[str], raw: list[Any]) -> list[dict[str, Any]]:
    """entitlement_check's warm branch on values already read; a missing snapshot is rebuilt."""
    if raw[0] is None:
        return entitlement_check(user_id=user_id, features=codes)  # cold snapshot: DB, then store
    start = time.perf_counter()
    entitlement_cache_hits_total.inc()
    meta = orjson.loads(raw[0])
    now = time.time()
    entries = [None if value is None else orjson.loads(value) for value in raw[1:]]
    results = check_results(codes, entries, meta, now)
    allowed = sum(1 for result in results if result["allowed"])
    if allowed:
        entitlement_checks_allowed.inc(allowed)
    if len(results) - allowed:
        entitlement_checks_denied.inc(len(results) - allowed)
    entitlement_check_duration_seconds.observe(time.perf_counter() - start)
    return results


def _respond(token_key: str, user_id: int, codes: Sequence[str], bulk: bool) -> HttpResponse | None:
    response = _respond_body(token_key, user_id, codes, bulk)
    if response is not None:
        response["Allow"] = "POST, OPTIONS" if bulk else "GET, HEAD, OPTIONS"  # as DRF's action
    return response


def _respond_body(token_key: str, user_id: int, codes: Sequence[str], bulk: bool) -> HttpResponse | None:
    read = _warm_read(token_key, user_id, codes)
    if read is None:
        return None
    limited, time_left, raw = read
    if limited:  # as RatelimitThrottle + DRF's Throttled: wait = max(1, seconds left)
        wait = max(1, int(time_left))
        message = str(exceptions.Throttled(wait).detail)
        return _json(429, error_body("rate_limited", message), {"Retry-After": str(wait)})
    try:
        results = _answer(user_id, codes, raw)
    except (OperationalError, InterfaceError) as exc:
        logger.error("database unavailable: %s", exc)
        return _json(
            503,
            error_body("database_unavailable", "The service cannot reach its database; retry shortly."),
            {"Retry-After": "5"},
        )
    except DomainError as exc:
        return _json(exc.status_code, error_body(exc.code, exc.message, exc.fields, exc.extra), exc.headers)
    except Exception:
        logger.exception("unhandled error in API view")
        return _json(500, error_body("internal_error", "An unexpected error occurred."))
    return _json(200, {"results": results} if bulk else results[0])


def _remember(request: HttpRequest, token_key: str, response: HttpResponseBase) -> HttpResponseBase:
    """After a DRF 200 with a Token header, request.user is that token's user (DRF sets it)."""
    if response.status_code == 200:
        user = request.__dict__.get("user")
        pk = getattr(user, "pk", None)
        if isinstance(pk, int) and getattr(user, "is_authenticated", False) is True:
            _hint_store(token_key, pk)
            if not _script:  # load the script once, on this cold path, not in the first warm request
                try:
                    conn = get_redis_connection("default")
                    _script_prepare(conn)
                    conn.script_load(_CHECK)
                except REDIS_ERRORS:
                    logger.debug("entitlement check script not loaded", exc_info=True)
    return response


def check_fast(request: HttpRequest) -> HttpResponse | None:
    """GET entitlements/check answered warm, or None: the request goes on to the DRF action."""
    token_key = _token_key(request) if request.method == "GET" else None
    if token_key is None or not _fast_allowed(request):
        return None
    user_id = _user_for(token_key)
    if user_id is None:
        return None
    features = request.GET.getlist("feature")
    wanted = request.GET.getlist("user_id")
    if (
        len(features) == 1
        and _simple_codes(features)
        and (not wanted or (len(wanted) == 1 and wanted[0].isascii() and wanted[0].isdigit()))
        and (not wanted or int(wanted[0]) == user_id)
    ):
        return _respond(token_key, user_id, features, bulk=False)
    return None


def learning_view(drf_view: View) -> View:
    """A DRF action (check or bulk-check) that also learns which user a token belongs to."""

    @csrf_exempt
    def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = drf_view(request, *args, **kwargs)
        token_key = _token_key(request)
        return response if token_key is None else _remember(request, token_key, response)

    return view


def _bulk_input(request: HttpRequest, user_id: int) -> list[str] | None:
    """The codes of a body DRF's BulkCheckInputSerializer takes unchanged for this user, else None."""
    if request.content_type != "application/json":
        return None
    if (request.content_params or {}).get("charset", "utf-8").lower() not in ("utf-8", "utf8"):
        return None  # DRF decodes with the declared charset; orjson only reads UTF-8
    try:
        data = orjson.loads(request.body)  # strict: no NaN/Infinity, no lone surrogate, 64-bit ints
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    features = data.get("features")
    if not isinstance(features, list) or not 0 < len(features) <= MAX_BULK_FEATURES:
        return None
    if not _simple_codes(features):
        return None
    if "user_id" in data:
        wanted = data["user_id"]
        if type(wanted) is not int or wanted != user_id:
            return None
    return features


def bulk_check_fast(request: HttpRequest) -> HttpResponse | None:
    """POST entitlements/bulk-check answered warm, or None: the request goes on to the DRF action."""
    token_key = _token_key(request) if request.method == "POST" else None
    if token_key is None or not _fast_allowed(request):
        return None
    user_id = _user_for(token_key)
    codes = None if user_id is None else _bulk_input(request, user_id)
    if user_id is None or codes is None:
        return None
    return _respond(token_key, user_id, codes, bulk=True)
