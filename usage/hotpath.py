"""POST usage/events (one event) answered without DRF when warm: the single-event ingest's hot path.

`event_fast` is called by payments_project.hotpath.HotPathMiddleware (settings.HOT_PATHS), ahead of
the session, CSRF, authentication, OTP and messages middleware (a token request uses none of them)
and of URL resolution. It answers only the common case:

- a warm token (entitlements.hotpath.warm_token: a well-formed Token header whose cached snapshot
  names an active user), JSON accepted;
- a UTF-8 JSON body that the batch's fast validation (usage.apis.fast_event) takes exactly as
  EventInputSerializer would, with no `user_id` or the caller's own (acting for another user is
  the DRF path's decision);
- and the token check plus the `usage` rate limit's count in ONE Redis round trip
  (entitlements.hotpath.warm_admit), whose 429 is the throttle's.

It owns only that shortcut: the event goes to the same service (usage_event_record), the answer
is built by the DRF action's own function (usage.apis.event_answer) and errors are rendered by
payments_project.api.error_answer. Anything else returns None before any side effect and the
request goes on untouched to the DRF action (UsageViewSet.events).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from entitlements.hotpath import error_response, json_body, json_response, warm_admit, warm_token
from payments_project.db import without_health_check
from usage.apis import UsageViewSet, event_answer, fast_event

_SCOPE = UsageViewSet.ratelimit_scope


def event_fast(request: HttpRequest) -> HttpResponse | None:
    """POST usage/events answered warm, or None: the request goes on to the DRF action."""
    if request.method != "POST":
        return None
    warm = warm_token(request)
    if warm is None:
        return None
    token_key, user_id = warm
    item = fast_event(json_body(request))
    if item is None or item.get("user_id", user_id) != user_id:
        return None
    admitted = warm_admit(token_key, user_id, _SCOPE)
    if admitted is False:
        return None
    if admitted is not True:
        return _as_drf(admitted)  # the throttle's 429
    try:
        # Retried on a new connection if the one kept from an earlier request died idle: the
        # idempotency key makes a second run a replay at worst.
        status, data = without_health_check(lambda: event_answer(item, user_id))
    except Exception as exc:  # noqa: BLE001 - answered (and logged) as DRF's exception handler would
        return _as_drf(error_response(exc))
    return _as_drf(json_response(status, data))


def _as_drf(response: HttpResponse) -> HttpResponse:
    """The headers DRF's action adds: its methods, and Vary (the viewset offers two renderers)."""
    response["Allow"] = "POST, OPTIONS"
    response["Vary"] = "Accept"
    return response
