"""Included by the project at api/v1/: entitlements/ and families/ (trailing slash optional)."""

from rest_framework.routers import SimpleRouter

from entitlements.apis import EntitlementViewSet, FamilyViewSet


class OptionalSlashRouter(SimpleRouter):
    """`/entitlements/check` and `/entitlements/check/` both match (no APPEND_SLASH redirect)."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("entitlements", EntitlementViewSet, basename="entitlement")
router.register("families", FamilyViewSet, basename="family")

urlpatterns = router.urls
