"""Included by the project at api/v1/: entitlements/ and families/ (trailing slash optional).

entitlements/check and entitlements/bulk-check are served first by the plain views of
entitlements.hotpath, which answer warm requests themselves and hand everything else to the DRF
actions below (still routed, so the OpenAPI schema documents them).
"""

from django.urls import URLPattern, URLResolver, re_path
from rest_framework.routers import SimpleRouter

from entitlements import hotpath
from entitlements.apis import EntitlementViewSet, FamilyViewSet


class OptionalSlashRouter(SimpleRouter):
    """`/entitlements/check` and `/entitlements/check/` both match (no APPEND_SLASH redirect)."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("entitlements", EntitlementViewSet, basename="entitlement")
router.register("families", FamilyViewSet, basename="family")


def _drf_view(name: str) -> hotpath.View:
    return next(p.callback for p in router.urls if isinstance(p, URLPattern) and p.name == name)


urlpatterns: list[URLPattern | URLResolver] = [
    re_path(
        r"^entitlements/check/?$",
        hotpath.check_view(_drf_view("entitlement-check")),
        name="entitlement-check",
    ),
    re_path(
        r"^entitlements/bulk-check/?$",
        hotpath.bulk_check_view(_drf_view("entitlement-bulk-check")),
        name="entitlement-bulk-check",
    ),
    *router.urls,
]
