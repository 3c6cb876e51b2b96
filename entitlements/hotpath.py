"""GET entitlements/check and POST entitlements/bulk-check answered without DRF when warm.

`check_fast` / `bulk_check_fast` are called by payments_project.hotpath.HotPathMiddleware
(settings.HOT_PATHS), ahead of the session, CSRF, authentication and messages middleware (a token
request uses none of them) and of URL resolution. They answer only the common, warm case:

- a well-formed `Authorization: Token <key>` header, no `format` parameter, an Accept header that
  is absent, `*/*` or `application/json`, input that DRF's serializers would take as is (see
  `_simple_codes`), and `user_id` absent or the caller's own id;
- and ONE Redis round trip (a Lua script, EVALSHA) finds the token's cached user snapshot active
  and belonging to the user we expect for that token: the script then also counts the request in
  django-ratelimit's counter (same key, window and ttl as payments_project.api's throttle) and
  reads the user's entitlement snapshot (`__meta`, the codes and the usage of the codes held:
  entitlements.cache.snapshot_read_lua).

It owns only that shortcut: the answer is built with the DRF path's own functions, so a change to
a result, a limit or the error format is made once. The token header is split by
payments_project.authentication.token_header_key, the counter is counted and judged by
payments_project.api's ratelimit_* functions, results come from
entitlements.selectors.entitlement_check_answer and apis.check_response_data, and errors are
rendered by payments_project.api.error_answer. Only the JSON writing is its own (`_json`: DRF's
renderer's bytes, faster).

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

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from django_redis import get_redis_connection
from rest_framework import exceptions

from entitlements import cache
from entitlements.apis import (
    FEATURE_CODE_MAX_LENGTH,
    MAX_BULK_FEATURES,
    EntitlementViewSet,
    check_response_data,
)
from entitlements.selectors import entitlement_check_answer
from payments_project.api import (
    error_answer,
    is_printable,
    json_bytes,
    ratelimit_cache_name,
    ratelimit_count_lua,
    ratelimit_counter,
    ratelimit_rate,
    ratelimit_usage,
    ratelimit_wait,
)
from payments_project.authentication import (
    REDIS_ERRORS,
    token_cache_keys,
    token_header_key,
    token_snapshot_prefix,
    token_snapshot_read,
)
from payments_project.db import health_check_now
from payments_project.redis_client import redis_client, redis_script_run
from payments_project.security import UNPARSED, orjson_loads_bounded

logger = logging.getLogger(__name__)

View = Callable[..., HttpResponseBase]

# KEYS[1] token snapshot, KEYS[2] entitlement snapshot, KEYS[3] rate counter (absent: no limit).
# ARGV[1] token_snapshot_prefix: the start of an ACTIVE snapshot of the expected user; ARGV[2] the
# counter's ttl; ARGV[3] cache.snapshot_codes_arg(codes) (absent: only the token and the
# counter, warm_admit). {0}: not that user (or no snapshot), nothing done. Else {1, count or -1,
# {cache.snapshot_read_lua's values}} (nested: not copied value by value in Lua); the counter is
# counted by the throttle's own Lua lines.
_CHECK = (
    """
local token = redis.call('GET', KEYS[1])
if not token or string.sub(token, 1, string.len(ARGV[1])) ~= ARGV[1] then return {0} end
local count = -1
if KEYS[3] then
"""
    + ratelimit_count_lua(counter="KEYS[3]", ttl="ARGV[2]")
    + """end
local values = {}
if ARGV[3] then
"""
    + cache.snapshot_read_lua(key="KEYS[2]", codes="ARGV[3]", into="read")
    + """values = read
end
return {1, count, values}
"""
)

_HINTS: dict[str, int] = {}  # token key -> id of its user, learnt from DRF answers
_HINTS_MAX = 100_000
_ACCEPT_OK = frozenset({"", "*/*", "application/json"})
_SCOPE = EntitlementViewSet.ratelimit_scope
_script_loaded: list[bool] = []  # [True] once this process loaded _CHECK into Redis


def _token_key(request: HttpRequest) -> str | None:
    """The ASCII key of a well-formed `Token <key>` header, split by the authentication class's
    own function, else None: DRF then answers (or refuses) the request."""
    try:
        key = token_header_key(request.META.get("HTTP_AUTHORIZATION", ""))
    except (UnicodeEncodeError, exceptions.AuthenticationFailed):
        return None
    return key if key is not None and key.isascii() else None


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
    if not isinstance(snapshot, bytes):
        return None
    try:
        written_id, flags = token_snapshot_read(snapshot)
    except ValueError:
        return None  # not a snapshot: the DRF path reads the database
    if not (written_id.isascii() and written_id.isdigit() and flags["is_active"]):
        return None
    user_id = int(written_id)
    _hint_store(token_key, user_id)
    return user_id


def _hint_store(token_key: str, user_id: int) -> None:
    if len(_HINTS) >= _HINTS_MAX:
        _HINTS.clear()
    _HINTS[token_key] = user_id


def _simple_codes(values: Sequence[Any]) -> bool:
    """Feature codes DRF's CharField(max_length=FEATURE_CODE_MAX_LENGTH) keeps unchanged (no trim,
    no error): strings of 1 to that many printable characters (so no NUL, no lone surrogate)
    without surrounding spaces."""
    for value in values:
        if type(value) is not str or not 0 < len(value) <= FEATURE_CODE_MAX_LENGTH or not is_printable(value):
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
    """DRF's JSONRenderer's bytes (payments_project.api.json_bytes), faster."""
    response = HttpResponse(json_bytes(data), status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _warm_read(
    token_key: str, user_id: int, codes: Sequence[str], scope: str = _SCOPE
) -> tuple[dict[str, Any] | None, list[Any]] | None:
    """ONE round trip: (the rate limit's usage, None when there is none; the snapshot's values in
    cache.snapshot_fields(codes)' order, usage nil for codes not held; [] without codes).

    None: not warm (or Redis unreachable), nothing was counted: the caller delegates.
    """
    rate = ratelimit_rate(scope)
    if rate and ratelimit_cache_name() != "default":
        return None  # the counter lives elsewhere: the DRF path counts it
    keys = [token_cache_keys(token_key)[0], cache.snapshot_key(user_id)]
    ttl, limit, window = 0, 0, 0
    if rate:
        # The throttle's user_or_ip value for an authenticated user is its id.
        counter_key, limit, ttl, window = ratelimit_counter(str(user_id), scope, rate, "default")
        keys.append(counter_key)
    try:
        args = [token_snapshot_prefix(user_id), ttl]
        if codes:
            joined = cache.snapshot_codes_arg(codes)
            if joined is None:
                return None  # callers pass none such: _simple_codes refuses them
            args.append(joined)
        out = redis_script_run(_CHECK, keys=keys, args=args)
    except REDIS_ERRORS:
        return None  # Redis down or not Redis: the DRF path falls back to the database
    if not out or out[0] != 1:
        return None
    usage = ratelimit_usage(count=int(out[1]), limit=limit, window=window) if rate else None
    return usage, out[2]


def _error(exc: BaseException) -> HttpResponse:
    """The error as DRF's exception handler answers it (the same error_answer)."""
    status, body, headers = error_answer(exc)
    return _json(status, body, headers)


def _respond(token_key: str, user_id: int, codes: Sequence[str], bulk: bool) -> HttpResponse | None:
    response = _respond_body(token_key, user_id, codes, bulk)
    if response is not None:
        response["Allow"] = "POST, OPTIONS" if bulk else "GET, HEAD, OPTIONS"  # as DRF's action
    return response


def _respond_body(token_key: str, user_id: int, codes: Sequence[str], bulk: bool) -> HttpResponse | None:
    read = _warm_read(token_key, user_id, codes)
    if read is None:
        return None
    usage, raw = read
    wait = ratelimit_wait(usage)
    if wait is not None:  # as RatelimitThrottle, then DRF's Throttled
        return _error(exceptions.Throttled(wait))
    if raw[0] is None:
        # No snapshot: the database answers. The connection kept from an earlier request is checked
        # first, as Django's request would have (a WSGI layer in front skips that check).
        health_check_now()
    try:
        results = entitlement_check_answer(user_id=user_id, codes=codes, raw=raw, start=time.perf_counter())
    except Exception as exc:  # noqa: BLE001 - answered (and logged) as DRF's exception handler would
        return _error(exc)
    return _json(200, check_response_data(results, bulk=bulk))


def _remember(request: HttpRequest, token_key: str, response: HttpResponseBase) -> HttpResponseBase:
    """After a DRF 200 with a Token header, request.user is that token's user (DRF sets it)."""
    if response.status_code == 200:
        user = request.__dict__.get("user")
        pk = getattr(user, "pk", None)
        if isinstance(pk, int) and getattr(user, "is_authenticated", False) is True:
            _hint_store(token_key, pk)
            if not _script_loaded:  # load the script once, on this cold path, not in the first warm request
                try:
                    redis_client().script_load(_CHECK)
                    _script_loaded.append(True)
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
    data = json_body(request)
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


# --- for the other token hot paths (usage.hotpath) ------------------------------------------------
# The same shortcut for another endpoint: this module's token, throttle and rendering, so the
# rules (which requests qualify, the snapshot check, the counter, the error bytes) stay in one place.


def warm_token(request: HttpRequest) -> tuple[str, int] | None:
    """(token key, user id) of a request a hot path may take: a well-formed Token header whose user
    this process knows or the token snapshot names, no `format`, JSON accepted; else None."""
    token_key = _token_key(request)
    if token_key is None or not _fast_allowed(request):
        return None
    user_id = _user_for(token_key)
    return None if user_id is None else (token_key, user_id)


def warm_admit(token_key: str, user_id: int, scope: str) -> HttpResponse | bool:
    """ONE round trip: the token snapshot still names this active user, and the request is counted
    in `scope`'s rate limit as the throttle would. True: go on; a response: the throttle's 429;
    False: not warm (nothing counted), the caller delegates to DRF."""
    read = _warm_read(token_key, user_id, (), scope)
    if read is None:
        return False
    wait = ratelimit_wait(read[0])
    return _error(exceptions.Throttled(wait)) if wait is not None else True


def json_body(request: HttpRequest) -> Any:
    """The body as DRF's JSON parser would read it, or None when a hot path should not try (not
    JSON, another charset, or not valid: DRF then answers)."""
    if request.content_type != "application/json":
        return None
    if (request.content_params or {}).get("charset", "utf-8").lower() not in ("utf-8", "utf8"):
        return None  # DRF decodes with the declared charset; orjson only reads UTF-8
    # What the DRF parser would read, when orjson can say it (no NaN/Infinity, no lone surrogate,
    # no integer past 64 bits: a body holding one is DRF's to refuse).
    data = orjson_loads_bounded(request.body)
    return None if data is UNPARSED else data


def json_response(status: int, data: Any) -> HttpResponse:
    """Bytes as DRF's JSONRenderer writes them (see _json)."""
    return _json(status, data)


def error_response(exc: BaseException) -> HttpResponse:
    """The error as DRF's exception handler answers it."""
    return _error(exc)
