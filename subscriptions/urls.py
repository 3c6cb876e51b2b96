"""Included by the project under api/v1/."""

from rest_framework.routers import SimpleRouter

from subscriptions.apis import SubscriptionViewSet

router = SimpleRouter()
router.trailing_slash = "/?"  # .../cancel and .../cancel/ both answer
router.register("subscriptions", SubscriptionViewSet, basename="subscription")

urlpatterns = router.urls
