"""What the middleware stack does around a view, for answers given before Django's handler.

At a thousand requests a second on two cores, Django's handler (the request object, the request
signals, the middleware stack) and the connection's health check (`SELECT 1` before each
request's first query) cost as much CPU as the work of the hottest requests. The WSGI layers of
payments_project/wsgi.py answer those (billing.stripe.wsgi: signed webhook deliveries;
payments_project.hotpath: the warm token hot paths) and use this module to answer them as the
full stack would:

- before: the checks the middleware makes before any view (`request_allowed`: ALLOWED_HOSTS,
  the HTTPS redirect, PREPEND_WWW, DISALLOWED_USER_AGENTS, a script prefix; `body_checked`: the
  input guard's size, charset, NUL and nesting limits), and the connection as the request
  signals leave it (`connection_ready`);
- after: the headers SecurityMiddleware, XFrameOptionsMiddleware, CommonMiddleware and
  RequestIdMiddleware add (`answer_headers`), and django-prometheus's series (`answer_count`).

Whatever a layer does not take goes on to Django untouched: a body read here is put back.
"""

from __future__ import annotations

import time
from io import BytesIO
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.http.request import split_domain_port, validate_host

from payments_project.observability import REQUEST_ID_HEADER, early_answer_count
from payments_project.security import BadInput, json_body_check, query_has_nul


def request_allowed(environ: dict[str, Any], db: Any) -> bool:
    """True when the stack before the view would let the request through to it unchanged (and a
    layer may take it): PostgreSQL, no script prefix, no NUL in the query, an allowed host, no
    HTTPS redirect..."""
    if (
        environ.get("SCRIPT_NAME")
        or query_has_nul(environ.get("QUERY_STRING", ""))  # the input guard's 400
        or settings.FORCE_SCRIPT_NAME is not None
        or settings.PREPEND_WWW
        or settings.DISALLOWED_USER_AGENTS
        or db.vendor != "postgresql"  # SQLite (`make run`): the full stack
    ):
        return False
    if not _host_allowed(environ):
        return False
    return not (settings.SECURE_SSL_REDIRECT and not is_secure(environ))  # else redirected (or exempt)


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


def is_secure(environ: dict[str, Any]) -> bool:
    """HttpRequest.is_secure."""
    if settings.SECURE_PROXY_SSL_HEADER:
        header, secure_value = settings.SECURE_PROXY_SSL_HEADER
        value = environ.get(header)
        if value is not None:
            return bool(value.split(",", 1)[0].strip() == secure_value)
    return bool(environ.get("wsgi.url_scheme") == "https")


def body_checked(environ: dict[str, Any], *, empty: bool = False) -> bytes | None:
    """The body when the input guard (payments_project.security) lets it through unchanged; else
    None, with the body (when read) put back for Django. An empty body only when `empty`."""
    content_type = environ.get("CONTENT_TYPE", "").lower()
    _, _, params = content_type.partition(";")
    if "charset" in params and params.replace(" ", "") not in ("charset=utf-8", "charset=utf8"):
        return None  # Django decodes with that charset
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if length == 0 and empty:
        return b""
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


def connection_ready(db: Any) -> bool:
    """Django's connection as its request signals would leave it, without the health check: a
    connection that died since its last use fails its first statement, and the layer either
    hands the request on to the full stack (which checks and replaces it) or runs it again on a
    new connection (payments_project.db.without_health_check). False: inside a transaction (a
    test's), or connections are not kept (CONN_MAX_AGE 0)."""
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


_headers: dict[bool, list[tuple[str, str]]] = {}  # by is_secure; emptied when settings change


def answer_headers(environ: dict[str, Any], content: bytes, *, request_id: str) -> list[tuple[str, str]]:
    """The headers the stack adds to a view's answer: Content-Length (CommonMiddleware), the
    security headers (SecurityMiddleware, XFrameOptionsMiddleware) and X-Request-ID
    (RequestIdMiddleware: payments_project.observability.request_id_for)."""
    secure = is_secure(environ)
    headers = _headers.get(secure)
    if headers is None:
        headers = _headers[secure] = _security_headers(secure=secure)
    return [("Content-Length", str(len(content))), *headers, (REQUEST_ID_HEADER, request_id)]


def _settings_changed(**_: Any) -> None:
    _headers.clear()


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


def answer_count(view: str, method: str, status: int, started: float) -> None:
    """django-prometheus's series as PrometheusBeforeMiddleware and PrometheusAfterMiddleware
    count a view's answer (`view` named as its URL pattern)."""
    from django_prometheus.middleware import Metrics

    metrics = Metrics.get_instance()
    metrics.requests_total.inc()
    metrics.responses_total.inc()
    seconds = time.perf_counter() - started
    metrics.requests_latency_before.observe(seconds)
    early_answer_count(view, method, status, seconds)
