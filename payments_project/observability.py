"""Request ids on every log line, in the web process and in the Celery tasks a request enqueues."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from django.http import HttpRequest, HttpResponse

REQUEST_ID_HEADER = "X-Request-ID"
_request_id: ContextVar[str] = ContextVar("request_id", default="-")
# Accept a caller's id only when it is short and plain, so it cannot forge log lines.
_VALID_ID = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")  # \Z: "$" would let a trailing newline in


def request_id_for(value: str | None) -> str:
    """A caller's id when short and plain, else a fresh one."""
    return value if value and _VALID_ID.match(value) else uuid.uuid4().hex


def bind_request_id(value: str | None) -> Token[str]:
    """Log the current context's lines under `value` (when plain) or a fresh id; the token resets it."""
    return _request_id.set(request_id_for(value))


def current_request_id() -> str:
    return _request_id.get()


def request_id_reset(token: Token[str]) -> None:
    _request_id.reset(token)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _request_id.set("-")
        bind_request_id(request.headers.get(REQUEST_ID_HEADER))
        try:
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = _request_id.get()
            return response
        finally:
            _request_id.reset(token)


def celery_publish_request_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """before_task_publish: carry the current request id to the task."""
    if headers is not None and "request_id" not in headers:
        headers["request_id"] = _request_id.get()


def celery_bind_request_id(task: Any = None, **_: Any) -> None:
    """task_prerun: log the task's lines under the id of the request that enqueued it."""
    request_id = getattr(getattr(task, "request", None), "request_id", None)
    bind_request_id(request_id if isinstance(request_id, str) else None)


_bound: dict[tuple[str, str, int], tuple[Any, ...]] = {}


def early_answer_count(view: str, method: str, status: int, seconds: float) -> None:
    """django-prometheus's request/response series for an answer given by a middleware before
    PrometheusAfterMiddleware (which then never sees it): requests by method, responses by status
    and by status/view/method, latency by view/method, `view` named as the URL pattern is (as
    for the view's own answer). Children bound once per label set."""
    children = _bound.get((view, method, status))
    if children is None:
        from django_prometheus.middleware import Metrics

        metrics = Metrics.get_instance()
        children = _bound[(view, method, status)] = (
            metrics.requests_by_method.labels(method),
            metrics.responses_by_status.labels(str(status)),
            metrics.responses_by_status_view_method.labels(str(status), view, method),
            metrics.requests_latency_by_view_method.labels(view, method),
        )
    by_method, by_status, by_view, latency = children
    by_method.inc()
    by_status.inc()
    by_view.inc()
    latency.observe(seconds)
