"""Billing API: the plan list priced per zone, one-time payments, checkout sessions."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import exceptions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from billing.models import Payment, Plan, PricingZone
from billing.selectors import payment_list, plan_list, plan_quote, zone_for_country
from billing.services.payments import checkout_session_create, payment_create, payment_status_set
from payments_project.api import can_act_for_any_user, subject_user


class PlanQuerySerializer(serializers.Serializer):
    country = serializers.RegexField(
        r"^[A-Za-z]{2}$",
        required=False,
        error_messages={"invalid": "An ISO 3166-1 alpha-2 country code, e.g. FR."},
    )

    def validate_country(self, value: str) -> str:
        return value.upper()


class ZoneOutputSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    currency = serializers.CharField()


class PriceOutputSerializer(serializers.Serializer):
    amount = serializers.IntegerField(help_text="Minor units of the currency.")
    currency = serializers.CharField()
    display = serializers.CharField()
    source = serializers.ChoiceField(choices=["zone_price", "multiplier", "list"])  # type: ignore[assignment]


class PlanFeatureOutputSerializer(serializers.Serializer):
    code = serializers.CharField(source="feature.code")
    name = serializers.CharField(source="feature.name")
    kind = serializers.CharField(source="feature.kind")
    limit = serializers.IntegerField(allow_null=True)
    unlimited = serializers.BooleanField()
    reset_period = serializers.CharField()


class PlanOutputSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    interval = serializers.CharField()
    interval_count = serializers.IntegerField()
    trial_days = serializers.IntegerField()
    is_family = serializers.BooleanField()
    max_members = serializers.IntegerField(allow_null=True)
    features = PlanFeatureOutputSerializer(source="plan_features.all", many=True)
    price = serializers.SerializerMethodField()
    zone = serializers.SerializerMethodField()

    @extend_schema_field(PriceOutputSerializer(allow_null=True))
    def get_price(self, plan: Plan) -> dict[str, Any] | None:
        quote = plan_quote(plan=plan, zone=self.context["zone"])
        if quote is None:
            return None
        return {
            "amount": quote.amount,
            "currency": quote.currency,
            "display": quote.display,
            "source": quote.source,
        }

    @extend_schema_field(ZoneOutputSerializer(allow_null=True))
    def get_zone(self, plan: Plan) -> dict[str, str] | None:
        zone: PricingZone | None = self.context["zone"]
        return None if zone is None else {"code": zone.code, "name": zone.name, "currency": zone.currency}


class PlanViewSet(viewsets.ReadOnlyModelViewSet):
    """Active plans, priced for `?country=XX` (its pricing zone, else the default zone)."""

    permission_classes = [AllowAny]
    lookup_field = "code"
    ratelimit_scope = "plans"
    serializer_class = PlanOutputSerializer

    def _zone(self) -> PricingZone | None:
        if not hasattr(self, "_zone_cache"):
            query = PlanQuerySerializer(data=self.request.query_params)
            query.is_valid(raise_exception=True)
            self._zone_cache = zone_for_country(country=query.validated_data.get("country"))
        return self._zone_cache

    def get_queryset(self) -> QuerySet[Plan]:
        return plan_list(zone=self._zone())

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "zone": self._zone()}

    @extend_schema(parameters=[OpenApiParameter("country", str, description="ISO 3166-1 alpha-2, e.g. JP")])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(
        parameters=[
            OpenApiParameter("code", str, OpenApiParameter.PATH, description="The plan's code"),
            OpenApiParameter("country", str, description="ISO 3166-1 alpha-2, e.g. JP"),
        ]
    )
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)


# --- Payments -------------------------------------------------------------------------------------


class PaymentCreateInputSerializer(serializers.Serializer):
    amount = serializers.IntegerField(min_value=1, help_text="Minor units: cents, yen, fils.")
    currency = serializers.RegexField(r"^[A-Za-z]{3}$", help_text="ISO 4217, e.g. USD, JPY, KWD.")
    description = serializers.CharField(max_length=1000, required=False, default="", allow_blank=True)
    order_id = serializers.CharField(max_length=255, required=False, default="", allow_blank=True)
    metadata = serializers.DictField(
        child=serializers.CharField(max_length=500), required=False, default=dict
    )
    payment_method = serializers.CharField(
        max_length=255, required=False, help_text="e.g. pm_... from Stripe.js; omit to confirm client-side."
    )
    plan: serializers.SlugRelatedField[Plan] = serializers.SlugRelatedField(
        slug_field="code",
        queryset=Plan.objects.filter(active=True, interval=Plan.Interval.ONE_TIME),
        required=False,
        help_text="A one-time plan whose features this payment buys, at its price in the zone.",
    )
    country = serializers.RegexField(
        r"^[A-Za-z]{2}$", required=False, help_text="With `plan`: the buyer's country (pricing zone)."
    )

    def validate_country(self, value: str) -> str:
        return value.upper()

    def validate_metadata(self, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 40:
            raise serializers.ValidationError("At most 40 keys.")
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
            "client_secret",
            "failure_code",
            "failure_message",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class PaymentListQuerySerializer(serializers.Serializer):
    user_id = serializers.IntegerField(required=False)
    customer = serializers.CharField(required=False, help_text="Stripe customer id (staff/service).")
    status = serializers.ChoiceField(choices=Payment.Status.choices, required=False)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)


class PaymentStatusInputSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Payment.Status.choices)
    reason = serializers.CharField(max_length=1000)


class CanSetPaymentStatus(BasePermission):
    """Finance only (the permission), not every staff member."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user.is_authenticated and request.user.has_perm("billing.set_payment_status"))


class PaymentViewSet(viewsets.GenericViewSet):
    """One-time payments. A user sees their own; staff and service accounts see all."""

    serializer_class = PaymentOutputSerializer
    ratelimit_scope = "payments"

    def get_queryset(self) -> QuerySet[Payment]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no real user
            return Payment.objects.none()
        return payment_list(
            user=self.request.user, for_any_user=can_act_for_any_user(self.request.user), filters={}
        )

    @extend_schema(parameters=[PaymentListQuerySerializer], responses=PaymentOutputSerializer(many=True))
    def list(self, request: Request) -> Response:
        query = PaymentListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        payments = payment_list(
            user=request.user, for_any_user=can_act_for_any_user(request.user), filters=query.validated_data
        )
        page = self.paginate_queryset(payments)
        return self.get_paginated_response(PaymentOutputSerializer(page, many=True).data)

    @extend_schema(responses=PaymentOutputSerializer)
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
            OpenApiParameter("user_id", int, description="Staff/service: pay on behalf of this user."),
        ],
    )
    def create(self, request: Request) -> Response:
        data = PaymentCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        payment = payment_create(
            user=subject_user(request, request.query_params.get("user_id")),
            idempotency_key=request.headers.get("Idempotency-Key") or None,
            **data.validated_data,
        )
        return Response(PaymentOutputSerializer(payment).data, status=201)

    @extend_schema(request=PaymentStatusInputSerializer, responses=PaymentOutputSerializer)
    @action(detail=True, methods=["post"], url_path="status", permission_classes=[CanSetPaymentStatus])
    def set_status(self, request: Request, pk: str) -> Response:
        data = PaymentStatusInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if not str(pk).isdigit():
            raise exceptions.NotFound("No such payment.")
        # Finance acts on anyone's payment: looked up by id, not through the caller's own list.
        payment = payment_status_set(payment_id=int(pk), staff_user=request.user, **data.validated_data)
        return Response(PaymentOutputSerializer(payment).data)


class CheckoutSessionInputSerializer(serializers.Serializer):
    plan = serializers.CharField(max_length=64)
    country = serializers.RegexField(r"^[A-Za-z]{2}$", required=False)
    zone = serializers.CharField(max_length=64, required=False)
    success_url = serializers.URLField()
    cancel_url = serializers.URLField()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("country") and attrs.get("zone"):
            raise serializers.ValidationError("Give a country or a zone, not both.")
        return attrs


class CheckoutSessionOutputSerializer(serializers.Serializer):
    id = serializers.CharField()
    url = serializers.URLField()
    mode = serializers.ChoiceField(choices=["payment", "subscription"])
    plan = serializers.CharField()
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    zone = serializers.CharField(allow_null=True)


class CheckoutSessionViewSet(viewsets.ViewSet):
    """Stripe Checkout for a plan, priced in the caller's zone; entitlements follow the webhook."""

    ratelimit_scope = "payments"

    @extend_schema(request=CheckoutSessionInputSerializer, responses={201: CheckoutSessionOutputSerializer})
    def create(self, request: Request) -> Response:
        data = CheckoutSessionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        session = checkout_session_create(
            user=subject_user(request, request.query_params.get("user_id")),
            plan_code=values["plan"],
            country=values.get("country", "").upper() or None,
            zone_code=values.get("zone"),
            success_url=values["success_url"],
            cancel_url=values["cancel_url"],
            idempotency_key=request.headers.get("Idempotency-Key") or None,
        )
        return Response(CheckoutSessionOutputSerializer(session).data, status=201)
