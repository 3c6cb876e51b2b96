"""Payments over the API: one-time payments, and the charges Stripe made for subscriptions (`kind`)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from billing.catalog.selectors import trusted_country
from billing.models import Payment, PaymentStatusChange, Plan
from billing.money import MAX_AMOUNT_MINOR, STRIPE_CURRENCIES
from billing.payments.selectors import payment_list
from billing.payments.services import payment_create, payment_status_set
from payments_project.accounts.selectors import can_read_any_user
from payments_project.api import (
    IDEMPOTENCY_KEY_MAX_LENGTH,
    STRIPE_ID_MAX_LENGTH,
    WholeNumberField,
    column_max_length,
    idempotency_key_header,
    subject_user_for_read,
    subject_user_for_write,
)
from payments_project.ids import int_id
from payments_project.security import INT64_MAX


class PaymentCreateInputSerializer(serializers.Serializer):
    amount = WholeNumberField(
        min_value=1,
        max_value=MAX_AMOUNT_MINOR,
        help_text="Minor units: cents, yen, fils (Stripe's 8 digits).",
    )
    currency = serializers.RegexField(
        r"^[A-Za-z]{3}$", help_text="ISO 4217, one Stripe charges in (any case), e.g. USD, JPY, KWD."
    )
    description = serializers.CharField(
        max_length=column_max_length(Payment, "description"), required=False, default="", allow_blank=True
    )
    # The idempotency key derived from it ("order:<order_id>") must fit its column and Stripe's 255.
    order_id = serializers.CharField(
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH, required=False, default="", allow_blank=True
    )
    metadata = serializers.DictField(
        child=serializers.CharField(max_length=500, allow_blank=True),
        required=False,
        default=dict,
        help_text="At most 40 keys of at most 40 characters, values of at most 500 (Stripe's limits).",
    )
    payment_method = serializers.CharField(
        max_length=STRIPE_ID_MAX_LENGTH,
        required=False,
        help_text="e.g. pm_... from Stripe.js; omit to confirm client-side.",
    )
    plan: serializers.SlugRelatedField[Plan] = serializers.SlugRelatedField(
        slug_field="code",
        queryset=Plan.objects.filter(active=True, interval=Plan.Interval.ONE_TIME),
        required=False,
        help_text="A one-time plan whose features this payment buys, at its price in the zone.",
    )
    country = serializers.RegexField(
        r"^[A-Za-z]{2}$",
        required=False,
        help_text="Ignored (accepted for older clients): a plan is priced in the customer's own zone.",
    )
    user_id = WholeNumberField(
        required=False,
        min_value=1,
        max_value=2**63 - 1,
        help_text="Pay on behalf of this user (or `?user_id=`): service accounts and superusers only.",
    )

    def validate_country(self, value: str) -> str:
        return value.upper()

    def validate_currency(self, value: str) -> str:
        if value.upper() not in STRIPE_CURRENCIES:
            raise serializers.ValidationError("An ISO 4217 code Stripe charges in, e.g. USD.")
        return value.upper()

    def validate_metadata(self, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 40:
            raise serializers.ValidationError("At most 40 keys.")
        if any(not 1 <= len(key) <= 40 or "[" in key or "]" in key for key in value):
            raise serializers.ValidationError("Keys are 1 to 40 characters, without square brackets.")
        return value


class PaymentOutputSerializer(serializers.ModelSerializer):
    user_id = serializers.IntegerField(read_only=True)
    plan: serializers.SlugRelatedField[Plan] = serializers.SlugRelatedField(slug_field="code", read_only=True)
    display_amount = serializers.CharField(read_only=True)

    class Meta:
        model = Payment
        fields = [
            "id",
            "user_id",
            "kind",
            "amount",
            "currency",
            "display_amount",
            "amount_refunded",
            "status",
            "description",
            "order_id",
            "metadata",
            "plan",
            "stripe_payment_intent_id",
            "stripe_subscription_id",
            "stripe_invoice_id",
            "client_secret",
            "failure_code",
            "failure_message",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class PaymentListQuerySerializer(serializers.Serializer):
    user_id = WholeNumberField(
        required=False,
        min_value=1,
        max_value=INT64_MAX,
        help_text="Another user's payments: support, finance, service accounts, superusers.",
    )
    customer = serializers.CharField(
        required=False,
        max_length=STRIPE_ID_MAX_LENGTH,
        help_text="Stripe customer id (support, finance, service accounts).",
    )
    status = serializers.ChoiceField(choices=Payment.Status.choices, required=False)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)


class PaymentStatusInputSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Payment.Status.choices)
    reason = serializers.CharField(max_length=column_max_length(PaymentStatusChange, "reason"))


class CanSetPaymentStatus(BasePermission):
    """Finance only (the permission), not every staff member."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user.is_authenticated and request.user.has_perm("billing.set_payment_status"))


class PaymentViewSet(viewsets.GenericViewSet):
    """Payments. A user reads their own; support, finance, service accounts and superusers read
    anyone's. Paying for another user (`user_id` on create) is for service accounts and superusers;
    setting a status is finance's."""

    serializer_class = PaymentOutputSerializer
    ratelimit_scope = "payments"

    def get_queryset(self) -> QuerySet[Payment]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no real user
            return Payment.objects.none()
        return payment_list(
            user=self.request.user, for_any_user=can_read_any_user(self.request.user), filters={}
        )

    @extend_schema(
        parameters=[PaymentListQuerySerializer],
        responses=PaymentOutputSerializer(many=True),
        description="One-time payments and subscription charges (`kind`). Any user reads their own; "
        "support, finance, service accounts and superusers read anyone's (all, or `user_id`'s).",
    )
    def list(self, request: Request) -> Response:
        query = PaymentListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        # Naming another user is refused (403) unless the caller may read anyone's data.
        subject_user_for_read(request, query.validated_data.get("user_id"))
        payments = payment_list(
            user=request.user, for_any_user=can_read_any_user(request.user), filters=query.validated_data
        )
        page = self.paginate_queryset(payments)
        return self.get_paginated_response(PaymentOutputSerializer(page, many=True).data)

    @extend_schema(
        responses=PaymentOutputSerializer,
        description="One payment: the caller's own; anyone's for support, finance, service accounts "
        "and superusers (404 otherwise).",
    )
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(PaymentOutputSerializer(self.get_object()).data)

    @extend_schema(
        request=PaymentCreateInputSerializer,
        responses={201: PaymentOutputSerializer},
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="Retries with the same key never charge twice.",
            ),
            OpenApiParameter(
                "user_id",
                int,
                description="Pay on behalf of this user: service accounts and superusers only.",
            ),
        ],
        description="A one-time payment (a write: `user_id` is never open to support or finance).",
    )
    def create(self, request: Request) -> Response:
        data = PaymentCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = {**data.validated_data, "country": trusted_country(meta=request.META)}
        user = subject_user_for_write(request, values.pop("user_id", None))
        payment = payment_create(
            user=user,
            idempotency_key=idempotency_key_header(request),
            **values,
        )
        return Response(PaymentOutputSerializer(payment).data, status=201)

    @extend_schema(
        request=PaymentStatusInputSerializer,
        responses=PaymentOutputSerializer,
        description="Set a payment's status by hand, audited: finance staff (and superusers) only.",
    )
    @action(detail=True, methods=["post"], url_path="status", permission_classes=[CanSetPaymentStatus])
    def set_status(self, request: Request, pk: str) -> Response:
        data = PaymentStatusInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        payment_id = int_id(pk)
        if payment_id is None:
            raise exceptions.NotFound("No such payment.")
        # Finance acts on anyone's payment: looked up by id, not through the caller's own list.
        payment = payment_status_set(payment_id=payment_id, staff_user=request.user, **data.validated_data)
        return Response(PaymentOutputSerializer(payment).data)
