"""Checkout over the API: a Stripe Checkout Session for a plan; access follows Stripe's webhook."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from billing.catalog.selectors import trusted_country
from payments_project.api import WholeNumberField, idempotency_key_header, subject_user_for_write
from subscriptions.checkout.services import checkout_session_create


class CheckoutSessionInputSerializer(serializers.Serializer):
    plan = serializers.CharField(max_length=64)
    # Accepted for older clients and ignored: the price is the customer's own zone's, whatever a
    # request names (docs/pricing-trust.md).
    country = serializers.RegexField(
        r"^[A-Za-z]{2}$", required=False, help_text="Ignored: the price is the customer's own zone's."
    )
    zone = serializers.CharField(
        max_length=64, required=False, help_text="Ignored: the price is the customer's own zone's."
    )
    # Stripe takes URLs of up to 5,000 characters; ours are short, and so is the bound.
    success_url = serializers.URLField(max_length=2048)
    cancel_url = serializers.URLField(max_length=2048)
    user_id = WholeNumberField(
        required=False,
        min_value=1,
        max_value=2**63 - 1,
        help_text="Act for this user (or `?user_id=`): service accounts and superusers only.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("country") and attrs.get("zone"):
            raise serializers.ValidationError("Give a country or a zone, not both.")
        return attrs


class CheckoutMeteredPriceSerializer(serializers.Serializer):
    feature = serializers.CharField()
    unit_amount = serializers.IntegerField(help_text="Minor units of `currency` per unit used.")
    currency = serializers.CharField()


class CheckoutSessionOutputSerializer(serializers.Serializer):
    id = serializers.CharField()
    url = serializers.URLField()
    mode = serializers.ChoiceField(choices=["payment", "subscription"])
    plan = serializers.CharField()
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    zone = serializers.CharField(allow_null=True)
    metered = CheckoutMeteredPriceSerializer(
        many=True, help_text="Features billed by usage at each period's end, on top of `amount`."
    )


class CheckoutSessionViewSet(viewsets.ViewSet):
    """Stripe Checkout for a plan, priced in the customer's zone; entitlements follow the webhook."""

    ratelimit_scope = "payments"

    @extend_schema(request=CheckoutSessionInputSerializer, responses={201: CheckoutSessionOutputSerializer})
    def create(self, request: Request) -> Response:
        data = CheckoutSessionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        session = checkout_session_create(
            user=subject_user_for_write(request, values.get("user_id")),
            plan_code=values["plan"],
            country=trusted_country(meta=request.META),
            zone_code=None,
            success_url=values["success_url"],
            cancel_url=values["cancel_url"],
            idempotency_key=idempotency_key_header(request),
        )
        return Response(CheckoutSessionOutputSerializer(session).data, status=201)
