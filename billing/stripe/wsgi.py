"""Signed Stripe webhook deliveries answered at the WSGI level, before Django's request handler.

At 1,500 deliveries a second on two cores, Django's handler (the request object, the signals, the
middleware stack up to billing.stripe.middleware) and the connection's health check (`SELECT 1`
before each request's first query) cost more CPU than verifying and recording the delivery. This
layer (payments_project/wsgi.py) takes the ordinary case, a well-formed POST to the webhook URL
carrying a delivery that verifies, and answers it as the full stack would: the same checks before
(ALLOWED_HOSTS, the HTTPS redirect, the input guard's size, NUL and nesting limits), the same
verification and write (billing.stripe.views.delivery_record), the same 200 answer and headers,
counted in django-prometheus's series as its middlewares would count it.

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
import uuid
from collections.abc import Callable, Iterable
from io import BytesIO
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
from django.http.request import HttpHeaders, split_domain_port, validate_host
from django.urls import get_script_prefix, reverse
from django.views.decorators.debug import sensitive_variables
from djstripe.models import WebhookEndpoint
from djstripe.models.webhooks import get_remote_ip

from billing.stripe.views import EndpointChanged, delivery_record, remote_ip_valid
from payments_project.api import error_answer
from payments_project.observability import REQUEST_ID_HEADER, early_answer_count
from payments_project.security import BadInput, json_body_check

logger = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
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
                _count(started)
                start_response(status, headers)
                return [body]
        return app(environ, start_response)

    return application


def _take(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes] | None:
    """The answer to a delivery this layer takes, else None (and `environ` as Django expects it)."""
    db = connections[DEFAULT_DB_ALIAS]  # once: each `connection.x` is a thread-local look-up
    match = _route(environ, db)
    if match is None or not _connection_ready(db):
        return None
    body = _body(environ)
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
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(content)))]
    headers += _response_headers(secure=_secure(environ))
    headers.append((REQUEST_ID_HEADER, _request_id(environ)))
    return "200 OK", headers, content


def _unavailable(exc: Exception) -> tuple[str, list[tuple[str, str]], bytes]:
    """The API's answer to an unreachable database (payments_project.api.error_answer): 503."""
    answer = error_answer(exc)
    content = json.dumps(answer.body).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(content)))]
    headers += list(answer.headers.items())
    return f"{answer.status} Service Unavailable", headers, content


def _route(environ: dict[str, Any], db: BaseDatabaseWrapper) -> re.Match[str] | None:
    """The webhook URL's match when the request is one the stack before the view lets through."""
    if (
        environ.get("SCRIPT_NAME")
        or settings.FORCE_SCRIPT_NAME is not None
        or environ.get("QUERY_STRING")
        or settings.PREPEND_WWW
        or settings.DISALLOWED_USER_AGENTS
        or db.vendor != "postgresql"  # SQLite (`make run`): the view's transaction
    ):
        return None
    match = webhook_path_pattern().match(environ.get("PATH_INFO", ""))
    if match is None or not _host_allowed(environ):
        return None
    if settings.SECURE_SSL_REDIRECT and not _secure(environ):
        return None  # SecurityMiddleware redirects it (or exempts it)
    return match


def _host_allowed(environ: dict[str, Any]) -> bool:
    """HttpRequest.get_host's check (CommonMiddleware answers 400 otherwise)."""
    if settings.USE_X_FORWARDED_HOST and "HTTP_X_FORWARDED_HOST" in environ:
        host = environ["HTTP_X_FORWARDED_HOST"]
    else:
        host = environ.get("HTTP_HOST")
    if not host:
        return False  # Django builds it from SERVER_NAME: left to Django
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    domain, _ = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed)


def _secure(environ: dict[str, Any]) -> bool:
    """HttpRequest.is_secure."""
    if settings.SECURE_PROXY_SSL_HEADER:
        header, secure_value = settings.SECURE_PROXY_SSL_HEADER
        value = environ.get(header)
        if value is not None:
            return bool(value.split(",", 1)[0].strip() == secure_value)
    return bool(environ.get("wsgi.url_scheme") == "https")


def _body(environ: dict[str, Any]) -> bytes | None:
    """The body when the input guard (payments_project.security) lets it through; else None, with
    the body (when read) put back for Django."""
    content_type = environ.get("CONTENT_TYPE", "").lower()
    _, _, params = content_type.partition(";")
    if "charset" in params and params.replace(" ", "") not in ("charset=utf-8", "charset=utf8"):
        return None  # Django decodes with that charset
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if not 0 < length <= settings.API_MAX_BODY_BYTES or content_type.startswith("multipart/"):
        return None
    body: bytes = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = BytesIO(body)  # read again by Django if handed on
    if b"\x00" in body:
        return None
    if "json" in content_type:
        try:
            json_body_check(body)
        except BadInput:
            return None
    return body


def _connection_ready(db: Any) -> bool:
    """Django's connection as its request signals would leave it, without the health check: a
    connection that died since its last use fails the statement, and the delivery is handed on to
    the full stack, which checks and replaces it."""
    if db.in_atomic_block or db.settings_dict["CONN_MAX_AGE"] == 0:
        return False
    if db.connection is not None:
        if (
            db.errors_occurred
            or db.get_autocommit() != db.settings_dict["AUTOCOMMIT"]
            or (db.close_at is not None and time.monotonic() >= db.close_at)
        ):
            db.close()
        else:
            db.health_check_done = True
    return True


def _remote_ip(environ: dict[str, Any]) -> str:
    """What billing.stripe.views.delivery_remote_ip gives for this request."""
    request = SimpleNamespace(headers={"x-forwarded-for": environ.get("HTTP_X_FORWARDED_FOR")}, META=environ)
    return remote_ip_valid(get_remote_ip(request), environ.get("REMOTE_ADDR", ""))


_headers: dict[bool, list[tuple[str, str]]] = {}  # by is_secure; emptied when settings change


def _response_headers(*, secure: bool) -> list[tuple[str, str]]:
    """The headers SecurityMiddleware and XFrameOptionsMiddleware add to the view's answer."""
    headers = _headers.get(secure)
    if headers is None:
        headers = _headers[secure] = _security_headers(secure=secure)
    return headers


def _settings_changed(**_: Any) -> None:
    _headers.clear()
    _paths.clear()


setting_changed.connect(_settings_changed)


def _security_headers(*, secure: bool) -> list[tuple[str, str]]:
    headers = []
    if settings.SECURE_HSTS_SECONDS and secure:
        sts = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            sts += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            sts += "; preload"
        headers.append(("Strict-Transport-Security", sts))
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    policy = settings.SECURE_REFERRER_POLICY
    if policy:
        values = [value.strip() for value in policy.split(",")] if isinstance(policy, str) else policy
        headers.append(("Referrer-Policy", ",".join(values)))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    headers.append(("X-Frame-Options", settings.X_FRAME_OPTIONS.upper()))
    return headers


# RequestIdMiddleware's (payments_project.observability): a caller's id only when short and plain.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")


def _request_id(environ: dict[str, Any]) -> str:
    """RequestIdMiddleware's: the caller's when plain, else a fresh one."""
    given = environ.get("HTTP_X_REQUEST_ID")
    return given if given and _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex


def _count(started: float) -> None:
    """django-prometheus's series as PrometheusBeforeMiddleware and PrometheusAfterMiddleware
    count the view's answer."""
    from django_prometheus.middleware import Metrics

    metrics = Metrics.get_instance()
    metrics.requests_total.inc()
    metrics.responses_total.inc()
    seconds = time.perf_counter() - started
    metrics.requests_latency_before.observe(seconds)
    early_answer_count(VIEW_NAME, "POST", 200, seconds)
