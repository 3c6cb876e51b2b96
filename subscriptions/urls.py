"""Included by the project under api/v1/: subscriptions/, checkout-sessions/, families/, dunning/."""

from django.urls import re_path
from rest_framework.routers import SimpleRouter

from subscriptions.apis import SubscriptionViewSet
from subscriptions.checkout.apis import CheckoutSessionViewSet
from subscriptions.dunning.apis import OpenDunningView
from subscriptions.families.apis import FamilyViewSet

router = SimpleRouter()
router.trailing_slash = "/?"  # .../cancel and .../cancel/ both answer
router.register("subscriptions", SubscriptionViewSet, basename="subscription")
router.register("checkout-sessions", CheckoutSessionViewSet, basename="checkout-session")
router.register("families", FamilyViewSet, basename="family")

urlpatterns = [
    *router.urls,
    re_path(r"^dunning/?$", OpenDunningView.as_view(), name="dunning-list"),
]
