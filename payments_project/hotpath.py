"""The hot paths: warm token requests answered before the middleware they never use.

Each route of settings.HOT_PATHS (URL name -> "module.function") has an answer function that
takes the request and returns a response, or None to let it go on untouched: the warm
entitlement checks (entitlements.hotpath) and the single usage event (usage.hotpath).

Two places try them: `hot_paths_wsgi`, in front of Django's handler (payments_project/wsgi.py,
what the production server runs), and HotPathMiddleware, for what that layer hands on (a request
inside a transaction, a script prefix, SQLite...) and for servers that load Django's handler alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from io import BytesIO
from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import WSGIRequest
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import NoReverseMatch, Resolver404, get_script_prefix, resolve, reverse
from django.utils.module_loading import import_string

from payments_project.observability import (
    bind_request_id,
    current_request_id,
    early_answer_count,
    request_id_reset,
)
from payments_project.wsgi_environ import WSGIApp
from payments_project.wsgi_lane import (
    answer_count,
    answer_headers,
    body_checked,
    connection_ready,
    request_allowed,
)

logger = logging.getLogger(__name__)

Answer = Callable[[HttpRequest], HttpResponse | None]


_routes: dict[str, dict[str, tuple[str, Answer]]] = {}  # per URLconf (tests may swap it)


def hot_routes() -> dict[str, tuple[str, Answer]]:
    """{path: (URL name, answer function)} of settings.HOT_PATHS, built on the first request (the
    URLconf and the script prefix are known by then), with only the spellings the URLconf takes."""
    urlconf = settings.ROOT_URLCONF
    routes = _routes.get(urlconf)
    if routes is None:
        prefix = get_script_prefix()
        routes = {}
        for name, dotted in settings.HOT_PATHS.items():
            try:
                path = "/" + reverse(name)[len(prefix) :].strip("/")
            except NoReverseMatch:
                continue  # a URLconf without that API
            answer = import_string(dotted)
            for variant in (path, path + "/"):
                try:
                    if resolve(variant, urlconf).url_name == name:
                        routes[variant] = (name, answer)
                except Resolver404:
                    continue
        _routes[urlconf] = routes
    return routes


class HotPathMiddleware:
    """Tries the answer function of settings.HOT_PATHS for a request to its route.

    Sits after Security, WhiteNoise, Common and XFrameOptions (their headers and checks still apply)
    and before Session, CSRF, Authentication, Messages and PrometheusAfter, and before URL
    resolution: on the product's hottest requests those cost about a third of the server time and
    a token-authenticated request uses none of them (no session, no CSRF: DRF exempts token auth).
    CommonMiddleware stays ahead, so ALLOWED_HOSTS is still enforced.

    PrometheusAfter does not see a hot-path answer, so this middleware counts it in the
    django-prometheus series dashboards alert on: responses by status, by status/view/method,
    requests by method and latency by view/method (the view named as its URL pattern, as for a
    DRF answer); PrometheusBefore counts every request and response as usual. The body-size,
    charset and transport series leave hot-path answers out.

    When a hot path declines (None: cold, odd input, session auth, Redis down...), the request
    goes on through the rest of the stack to the DRF view exactly as if this middleware were absent.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        route = hot_routes().get(request.path_info)
        if route is not None:
            name, answer = route
            start = time.perf_counter()
            response = _answered(answer, request)
            if response is not None:
                elapsed = time.perf_counter() - start
                early_answer_count(name, request.method or "", response.status_code, elapsed)
                return response
        return self.get_response(request)


def _answered(answer: Answer, request: HttpRequest) -> HttpResponse | None:
    """The answer function's response, or None: it declined, or raised before any side effect (a
    query past DATA_UPLOAD_MAX_NUMBER_FIELDS, a bug), which the view then answers as it would
    without a hot path (a 400 in the error format, or a 500 reported)."""
    try:
        return answer(request)
    except Exception:
        logger.info("hot path: handing the request on", exc_info=True)
        return None


def hot_paths_wsgi(app: WSGIApp) -> WSGIApp:
    """`app` with the hot paths' answers given before it, as the full stack gives them (the
    checks before and the headers and counts after, payments_project.wsgi_lane): Django's
    handler and middleware were a fifth of a warm usage event's CPU. A request the stack before
    the view would treat otherwise (another host, a body the input guard refuses, a script
    prefix, SQLite, a NUL in the query) and any request an answer function declines goes on to
    `app` untouched: the hot path middleware then tries it again, and the view answers the rest."""

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method in ("GET", "POST") and "HTTP_AUTHORIZATION" in environ:
            route = hot_routes().get(environ.get("PATH_INFO", ""))
            if route is not None:
                started = time.perf_counter()
                answer = _lane_answer(environ, route[1], get=method == "GET")
                if answer is not None:
                    status, headers, content = answer
                    answer_count(route[0], method, int(status[:3]), started)
                    start_response(status, headers)
                    return [content]
        return app(environ, start_response)

    return application


def _lane_answer(
    environ: dict[str, Any], answer: Answer, *, get: bool
) -> tuple[str, list[tuple[str, str]], bytes] | None:
    db = connections[DEFAULT_DB_ALIAS]  # once: each `connection.x` is a thread-local look-up
    if not request_allowed(environ, db):
        return None
    body = body_checked(environ, empty=get)
    if body is None or not connection_ready(db):
        return None
    token = bind_request_id(environ.get("HTTP_X_REQUEST_ID"))  # the log lines' id, as the middleware's
    try:
        response = _answered(answer, WSGIRequest(environ))
        request_id = current_request_id()
    finally:
        request_id_reset(token)
    if response is None:
        environ["wsgi.input"] = BytesIO(body)  # as it came: the answer function may have read it
        return None
    content = response.content
    headers = [*response.items(), *answer_headers(environ, content, request_id=request_id)]
    return f"{response.status_code} {response.reason_phrase}", headers, content
