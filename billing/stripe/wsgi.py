"""Signed Stripe webhook deliveries answered at the WSGI level, before Django's request handler.

At 1,500 deliveries a second on two cores, Django's handler (the request object, the signals, the
middleware stack up to billing.stripe.middleware) and the connection's health check (`SELECT 1`
before each request's first query) cost more CPU than verifying and recording the delivery. This
layer (payments_project/wsgi.py) takes the ordinary case, a well-formed POST to the webhook URL
carrying a delivery that verifies, and answers it as the full stack would: the same checks before
(ALLOWED_HOSTS, the HTTPS redirect, the input guard's size, NUL and nesting limits), the same
verification and write (billing.stripe.views.delivery_record), the same 200 answer and headers,
counted in django-prometheus's series as its middlewares would count it (those checks, headers
and counts: payments_project.wsgi_lane, shared with the token hot paths' layer).

Anything else goes on to Django untouched (the body read here is handed on): another URL or
method, no signature, a request any check before the view would answer (bad host, too big, NUL,
too deep, plain HTTP under SECURE_SSL_REDIRECT), an unusual request (a script prefix, a query
string, a charset other than UTF-8), an unknown endpoint, a delivery that does not verify (the view
records it as refused and answers 400) and any error while recording (the view records it again
or answers the error as it always did: a delivery recorded twice counts twice, as a redelivery).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.signals import setting_changed
from django.db import (
    DEFAULT_DB_ALIAS,
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connections,
)
from django.db.backends.base.base import BaseDatabaseWrapper
from django.http.request import HttpHeaders
from django.urls import get_script_prefix, reverse
from django.views.decorators.debug import sensitive_variables
from djstripe.models import WebhookEndpoint
from djstripe.models.webhooks import get_remote_ip

from billing.stripe.views import EndpointChanged, delivery_record, remote_ip_valid
from payments_project.api import error_answer
from payments_project.observability import request_id_for
from payments_project.wsgi_environ import WSGIApp
from payments_project.wsgi_lane import (
    answer_count,
    answer_headers,
    body_checked,
    connection_ready,
    request_allowed,
)

logger = logging.getLogger(__name__)

VIEW_NAME = "djstripe:djstripe_webhook_by_uuid"
_ZERO = UUID(int=0)
# Django's uuid path converter's pattern.
_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_paths: dict[str, re.Pattern[str]] = {}  # per URLconf

# Per process: endpoint uuid -> (secret, tolerance) as last read. Never trusted alone: the write
# records nothing unless the row still has them (EndpointChanged), so a changed secret is read
# again and a deleted endpoint answered by the view (404). Shared with billing.stripe.middleware.
endpoints: dict[UUID, tuple[str, int]] = {}


def webhook_path_pattern() -> re.Pattern[str]:
    """The webhook URL's path (without the script prefix), its endpoint uuid as group 1."""
    pattern = _paths.get(settings.ROOT_URLCONF)
    if pattern is None:
        path = "/" + reverse(VIEW_NAME, kwargs={"uuid": _ZERO})[len(get_script_prefix()) :]
        before, after = path.split(str(_ZERO))
        pattern = _paths[settings.ROOT_URLCONF] = re.compile(
            f"{re.escape(before)}({_UUID}){re.escape(after)}\\Z"
        )
    return pattern


@sensitive_variables("endpoint")
def endpoint_delivery_record(
    uuid: UUID, *, body: str, signature: str, headers: dict[str, str], remote_ip: str
) -> str | None:
    """delivery_record against the endpoint as this process last read it: the event id once
    recorded, None (nothing recorded) for an unknown endpoint, a delivery that does not verify or
    an endpoint changed meanwhile (read again next time: the view answers this one)."""
    endpoint = endpoints.get(uuid) or _endpoint_read(uuid)
    if endpoint is None:
        return None
    try:
        event_id = delivery_record(
            endpoint_uuid=uuid,
            secret=endpoint[0],
            tolerance=endpoint[1],
            body=body,
            signature=signature,
            headers=headers,
            remote_ip=remote_ip,
        )
    except EndpointChanged:
        endpoints.pop(uuid, None)  # read again next time
        return None
    if event_id is None:
        # Not signed with the secret as last read: rotated meanwhile, or a forged delivery. Read
        # again now (a forged one must not empty the cache for the real ones that follow).
        _endpoint_read(uuid)
    return event_id


@sensitive_variables("endpoint")
def _endpoint_read(uuid: UUID) -> tuple[str, int] | None:
    """The endpoint's (secret, tolerance) as the database has them now, remembered (or forgotten,
    when the endpoint is gone) in `endpoints`."""
    rows = WebhookEndpoint.objects.filter(djstripe_uuid=uuid)
    endpoint = rows.values_list("secret", "djstripe_tolerance").first()
    if endpoint is None:
        endpoints.pop(uuid, None)
    else:
        endpoints[uuid] = endpoint
    return endpoint


def stripe_webhook_wsgi(app: WSGIApp) -> WSGIApp:
    """`app` with signed webhook deliveries that verify answered before it (see the module)."""

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "POST" and "HTTP_STRIPE_SIGNATURE" in environ:
            started = time.perf_counter()
            answer = _take(environ)
            if answer is not None:
                status, headers, body = answer
                answer_count(VIEW_NAME, "POST", 200, started)
                start_response(status, headers)
                return [body]
        return app(environ, start_response)

    return application


def _take(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes] | None:
    """The answer to a delivery this layer takes, else None (and `environ` as Django expects it)."""
    db = connections[DEFAULT_DB_ALIAS]  # once: each `connection.x` is a thread-local look-up
    match = _route(environ, db)
    if match is None or not connection_ready(db):
        return None
    body = body_checked(environ)
    if body is None:
        return None
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return None
    reused = db.connection is not None
    try:
        event_id = endpoint_delivery_record(
            UUID(match.group(1)),
            body=text,
            signature=environ["HTTP_STRIPE_SIGNATURE"],
            headers=dict(HttpHeaders(environ)),
            remote_ip=_remote_ip(environ),
        )
    except (DataError, IntegrityError):
        return None  # a value PostgreSQL refuses: the full stack answers it (400) as it always did
    except (OperationalError, InterfaceError) as exc:
        if not reused:
            # A fresh connection failed: the database is unreachable. Answered here (503, as the
            # API answers it), where handing on would wait for a second connect timeout.
            db.close()
            return _unavailable(exc)
        # A connection that died unnoticed (no health check here): the full stack checks and
        # replaces it and records the delivery. Had this one been committed before the answer was
        # lost, the second is counted as a redelivery would be (the inbox keeps one row).
        logger.info("webhook fast path: database connection failed, handing the delivery on", exc_info=True)
        return None
    except Exception:
        # Unexpected: the full stack answers it as it always did (the view, or a 500 reported).
        logger.warning("webhook fast path: handing the delivery on", exc_info=True)
        return None
    if event_id is None:
        return None
    content = json.dumps({"received": True, "event": event_id}).encode()
    headers = answer_headers(environ, content, request_id=request_id_for(environ.get("HTTP_X_REQUEST_ID")))
    return "200 OK", [("Content-Type", "application/json"), *headers], content


def _unavailable(exc: Exception) -> tuple[str, list[tuple[str, str]], bytes]:
    """The API's answer to an unreachable database (payments_project.api.error_answer): 503."""
    answer = error_answer(exc)
    content = json.dumps(answer.body).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(content)))]
    headers += list(answer.headers.items())
    return f"{answer.status} Service Unavailable", headers, content


def _route(environ: dict[str, Any], db: BaseDatabaseWrapper) -> re.Match[str] | None:
    """The webhook URL's match when the request is one the stack before the view lets through."""
    if environ.get("QUERY_STRING") or not request_allowed(environ, db):
        return None
    return webhook_path_pattern().match(environ.get("PATH_INFO", ""))


def _remote_ip(environ: dict[str, Any]) -> str:
    """What billing.stripe.views.delivery_remote_ip gives for this request."""
    request = SimpleNamespace(headers={"x-forwarded-for": environ.get("HTTP_X_FORWARDED_FOR")}, META=environ)
    return remote_ip_valid(get_remote_ip(request), environ.get("REMOTE_ADDR", ""))


def _settings_changed(**_: Any) -> None:
    _paths.clear()


setting_changed.connect(_settings_changed)
