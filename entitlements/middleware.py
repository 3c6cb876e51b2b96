"""Warm entitlement checks answered before the middleware a token request never uses."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import NoReverseMatch, get_script_prefix, reverse

from entitlements import hotpath
from payments_project.observability import early_answer_count

Answer = Callable[[HttpRequest], HttpResponse | None]


class EntitlementHotPathMiddleware:
    """Tries entitlements.hotpath on GET entitlements/check and POST entitlements/bulk-check.

    Sits after Security, WhiteNoise, Common and XFrameOptions (their headers and checks still apply)
    and before Session, CSRF, Authentication, Messages and PrometheusAfter, and before URL
    resolution: on the product's hottest request those cost about a third of the server time and
    a token-authenticated check uses none of them (no session, no CSRF: DRF exempts token auth).
    CommonMiddleware stays ahead, so ALLOWED_HOSTS is still enforced.

    PrometheusAfter does not see a hot-path answer, so this middleware counts it in the
    django-prometheus series dashboards alert on: responses by status, by status/view/method,
    requests by method and latency by view/method (the view named as the URL pattern, as for a
    DRF answer); PrometheusBefore counts every request and response as usual. The body-size,
    charset and transport series leave hot-path answers out.

    When the hot path declines (None: cold, odd input, session auth, Redis down...), the request
    goes on through the rest of the stack to the DRF view exactly as if this middleware were absent.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self._routes: dict[str, dict[str, Answer]] = {}  # per URLconf (tests may swap it)

    def _routes_get(self) -> dict[str, Answer]:
        # Built on the first request: the URLconf and the script prefix are known by then.
        urlconf = settings.ROOT_URLCONF
        routes = self._routes.get(urlconf)
        if routes is None:
            prefix = get_script_prefix()
            routes = {}
            for name, answer in (
                ("entitlement-check", hotpath.check_fast),
                ("entitlement-bulk-check", hotpath.bulk_check_fast),
            ):
                try:
                    path = "/" + reverse(name)[len(prefix) :].strip("/")
                except NoReverseMatch:
                    continue  # a URLconf without the entitlement API
                routes[path] = routes[path + "/"] = answer  # the routes take an optional slash
            self._routes[urlconf] = routes
        return routes

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        answer = self._routes_get().get(request.path_info)
        if answer is not None:
            start = time.perf_counter()
            response = answer(request)
            if response is not None:
                early_answer_count(
                    _VIEWS[answer], request.method or "", response.status_code, time.perf_counter() - start
                )
                return response
        return self.get_response(request)


_VIEWS: dict[Answer, str] = {
    hotpath.check_fast: "entitlement-check",
    hotpath.bulk_check_fast: "entitlement-bulk-check",
}
