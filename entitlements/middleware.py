"""Warm entitlement checks answered before the middleware a token request never uses."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import NoReverseMatch, get_script_prefix, reverse

from entitlements import hotpath

Answer = Callable[[HttpRequest], HttpResponse | None]


class EntitlementHotPathMiddleware:
    """Tries entitlements.hotpath on GET entitlements/check and POST entitlements/bulk-check.

    Sits after Security, WhiteNoise, Common and XFrameOptions (their headers and checks still apply)
    and before Session, CSRF, Authentication, Messages and PrometheusAfter, and before URL
    resolution: on the product's hottest request those cost about a third of the server time and
    a token-authenticated check uses none of them (no session, no CSRF: DRF exempts token auth).
    A hot-path answer is counted by the entitlement_* metrics and django-prometheus's
    "including middlewares" series, not by its per-view series.

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
            response = answer(request)
            if response is not None:
                return response
        return self.get_response(request)
