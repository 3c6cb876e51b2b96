"""Included by the project at api/v1/: entitlements/ and families/ (trailing slash optional).

Warm entitlements/check and entitlements/bulk-check requests are answered before routing by
payments_project.hotpath; the ones that reach here go to the DRF actions, wrapped by
hotpath.learning_view so the hot path learns which user a token belongs to (the router's own
routes stay, so the OpenAPI schema documents them).
"""

from django.urls import URLPattern, URLResolver, re_path
from rest_framework.routers import SimpleRouter

from entitlements import hotpath
from entitlements.apis import EntitlementViewSet


class OptionalSlashRouter(SimpleRouter):
    """`/entitlements/check` and `/entitlements/check/` both match (no APPEND_SLASH redirect)."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("entitlements", EntitlementViewSet, basename="entitlement")


def _drf_view(name: str) -> hotpath.View:
    return next(p.callback for p in router.urls if isinstance(p, URLPattern) and p.name == name)


urlpatterns: list[URLPattern | URLResolver] = [
    re_path(
        r"^entitlements/check/?$",
        hotpath.learning_view(_drf_view("entitlement-check")),
        name="entitlement-check",
    ),
    re_path(
        r"^entitlements/bulk-check/?$",
        hotpath.learning_view(_drf_view("entitlement-bulk-check")),
        name="entitlement-bulk-check",
    ),
    *router.urls,
]
