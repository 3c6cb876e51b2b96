"""Subscriptions API: a customer's own subscriptions (staff and services: anyone's)."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from billing.models import Plan
from payments_project.accounts.selectors import can_act_for_any_user, can_read_any_user
from payments_project.api import WholeNumberField, subject_user_for_read
from payments_project.ids import int_id
from subscriptions import services
from subscriptions.models import Subscription
from subscriptions.selectors import subscription_list


class SubscriptionOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    user_id = serializers.IntegerField()
    plan = serializers.CharField(source="plan.code")
    status = serializers.CharField()
    current_period_start = serializers.DateTimeField(allow_null=True)
    current_period_end = serializers.DateTimeField(allow_null=True)
    trial_end = serializers.DateTimeField(allow_null=True)
    cancel_at_period_end = serializers.BooleanField()
    cancelled_at = serializers.DateTimeField(allow_null=True)
    amount = serializers.IntegerField(allow_null=True, help_text="Minor units of the currency.")
    currency = serializers.CharField()
    stripe_subscription_id = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()


class ListQuerySerializer(serializers.Serializer):
    user_id = WholeNumberField(
        required=False,
        min_value=1,
        max_value=2**63 - 1,
        help_text="Another user's subscriptions: support, finance, service accounts, superusers.",
    )


class CancelInputSerializer(serializers.Serializer):
    immediately = serializers.BooleanField(default=False)


class ChangePlanInputSerializer(serializers.Serializer):
    plan = serializers.SlugRelatedField(slug_field="code", queryset=Plan.objects.filter(active=True))


class SubscriptionViewSet(viewsets.GenericViewSet):
    serializer_class = SubscriptionOutputSerializer
    ratelimit_scope = "default"

    def get_queryset(self) -> QuerySet[Subscription]:
        """What the caller may read: their own, or anyone's for support, finance and services."""
        if getattr(self, "swagger_fake_view", False):  # schema generation has no real user
            return Subscription.objects.none()
        if can_read_any_user(self.request.user):
            return Subscription.objects.select_related("plan").order_by("-created_at", "-pk")
        return subscription_list(user=self.request.user)

    def _writable(self) -> QuerySet[Subscription]:
        """What the caller may change: their own, or anyone's for finance and services (support
        reads others' subscriptions but never changes them: 404, as for a stranger's)."""
        user = self.request.user
        if can_act_for_any_user(user) or user.has_perm(services.STAFF_PERMISSION):
            return Subscription.objects.select_related("plan").order_by("-created_at", "-pk")
        return subscription_list(user=user)

    def _subscription(self, *, write: bool = True) -> Subscription:
        pk = self.kwargs["pk"]
        rows = self._writable() if write else self.get_queryset()
        subscription_id = int_id(pk)
        subscription = rows.filter(pk=subscription_id).first() if subscription_id else None
        if subscription is None:
            raise NotFound("No such subscription.")
        return subscription

    def _respond(self, subscription: Subscription) -> Response:
        return Response(SubscriptionOutputSerializer(subscription).data)

    @extend_schema(
        parameters=[ListQuerySerializer],
        description="The caller's subscriptions, or `user_id`'s for support, finance, service accounts "
        "and superusers.",
    )
    def list(self, request: Request) -> Response:
        query = ListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        user = subject_user_for_read(request, query.validated_data.get("user_id"))
        page = self.paginate_queryset(subscription_list(user=user))
        return self.get_paginated_response(SubscriptionOutputSerializer(page, many=True).data)

    @extend_schema(
        description="One subscription: the caller's own; anyone's for support, finance, service "
        "accounts and superusers."
    )
    def retrieve(self, request: Request, pk: str) -> Response:
        return self._respond(self._subscription(write=False))

    @extend_schema(
        request=CancelInputSerializer,
        responses=SubscriptionOutputSerializer,
        description="Cancel at period end: the owner, finance, service accounts. `immediately`: "
        "finance only. Support may not.",
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        subscription = self._subscription()  # someone else's: 404 before anything else
        data = CancelInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        subscription = services.subscription_cancel(
            subscription=subscription,
            actor=request.user,
            immediately=data.validated_data["immediately"],
        )
        return self._respond(subscription)

    @extend_schema(
        request=None,
        responses=SubscriptionOutputSerializer,
        description="Undo a pending cancellation: the owner, finance, service accounts.",
    )
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str) -> Response:
        subscription = services.subscription_resume(subscription=self._subscription(), actor=request.user)
        return self._respond(subscription)

    @extend_schema(
        request=ChangePlanInputSerializer,
        responses=SubscriptionOutputSerializer,
        description=(
            "Move to another plan at its price in the subscription's pricing zone, prorated by Stripe "
            "(the owner, finance, service accounts). A plan whose price there is 0 is not sold by "
            "subscription: 400 `not_for_sale`, as checkout answers. 409 `stripe_change_in_progress` "
            "while another change of the subscription is still being sent to Stripe."
        ),
    )
    @action(detail=True, methods=["post"], url_path="change-plan")
    def change_plan(self, request: Request, pk: str) -> Response:
        subscription = self._subscription()
        data = ChangePlanInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        subscription = services.subscription_change_plan(
            subscription=subscription, plan=data.validated_data["plan"], actor=request.user
        )
        return self._respond(subscription)
