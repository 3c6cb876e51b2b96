from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from billing.catalog.apis import PlanViewSet
from billing.payments.apis import PaymentViewSet
from billing.stripe.views import StripeEventView
from payments_project import health
from payments_project.accounts.apis import MeView
from payments_project.api import json_error_view
from payments_project.events.apis import EventFeedView
from usage.apis import UsageViewSet

router = DefaultRouter(trailing_slash=True)
router.register("plans", PlanViewSet, basename="plan")
router.register("payments", PaymentViewSet, basename="payment")
router.register("usage", UsageViewSet, basename="usage")

api_v1: list[URLPattern | URLResolver] = [
    # First: entitlement checks are the most frequent requests, resolved before anything else.
    path("", include("entitlements.urls")),
    path("", include(router.urls)),
    path("me/", MeView.as_view(), name="me"),
    path("events/", EventFeedView.as_view(), name="events-feed"),
    path("", include("subscriptions.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # Last: an unknown API route answers in the JSON error format even under DEBUG, where Django
    # would otherwise show its HTML page instead of calling handler404.
    re_path(r"", json_error_view(404, "not_found", "No such resource.")),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("admin/", admin.site.urls),
    # dj-stripe's webhook URL and name, served by our view (verification by dj-stripe, then the inbox).
    path(
        "djstripe/",
        include(
            (
                [path("webhook/<uuid:uuid>/", StripeEventView.as_view(), name="djstripe_webhook_by_uuid")],
                "djstripe",
            )
        ),
    ),
    path("health", health.health, name="health"),
    path("health/ready", health.ready, name="health-ready"),
    path("health/live", health.live, name="health-live"),
    path("status", health.status, name="status"),
    path("", include("django_prometheus.urls")),
]

handler400 = json_error_view(400, "bad_request", "The request is malformed.")
handler403 = "payments_project.backoffice.views.permission_denied"
handler404 = json_error_view(404, "not_found", "No such resource.")
handler500 = json_error_view(500, "internal_error", "An unexpected error occurred.")
