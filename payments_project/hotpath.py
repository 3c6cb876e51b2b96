"""The hot paths: warm token requests answered before the middleware they never use.

Each route of settings.HOT_PATHS (URL name -> "module.function") has an answer function that
takes the request and returns a response, or None to let it go on untouched: the warm
entitlement checks (entitlements.hotpath) and the single usage event (usage.hotpath).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import NoReverseMatch, Resolver404, get_script_prefix, resolve, reverse
from django.utils.module_loading import import_string

from payments_project.observability import early_answer_count

Answer = Callable[[HttpRequest], HttpResponse | None]


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
        self._routes: dict[str, dict[str, tuple[str, Answer]]] = {}  # per URLconf (tests may swap it)

    def _routes_get(self) -> dict[str, tuple[str, Answer]]:
        # Built on the first request: the URLconf and the script prefix are known by then.
        urlconf = settings.ROOT_URLCONF
        routes = self._routes.get(urlconf)
        if routes is None:
            prefix = get_script_prefix()
            routes = {}
            for name, dotted in settings.HOT_PATHS.items():
                try:
                    path = "/" + reverse(name)[len(prefix) :].strip("/")
                except NoReverseMatch:
                    continue  # a URLconf without that API
                answer = import_string(dotted)
                for variant in (path, path + "/"):  # only the spellings the URLconf itself takes
                    try:
                        if resolve(variant, urlconf).url_name == name:
                            routes[variant] = (name, answer)
                    except Resolver404:
                        continue
            self._routes[urlconf] = routes
        return routes

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        route = self._routes_get().get(request.path_info)
        if route is not None:
            name, answer = route
            start = time.perf_counter()
            response = answer(request)
            if response is not None:
                elapsed = time.perf_counter() - start
                early_answer_count(name, request.method or "", response.status_code, elapsed)
                return response
        return self.get_response(request)
