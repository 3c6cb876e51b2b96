"""The public catalog API: plans priced for the caller's zone."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, viewsets
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from billing.catalog.selectors import (
    customer_pricing_get,
    plan_feature_metered_price,
    plan_list,
    plan_quote,
    trusted_country,
    zone_for_country,
)
from billing.models import Plan, PlanFeature, PricingZone


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


class MeteredPriceOutputSerializer(serializers.Serializer):
    unit_amount = serializers.IntegerField(help_text="Minor units of the currency, per unit used.")
    currency = serializers.CharField()
    display = serializers.CharField(help_text="Per unit, as people read it, e.g. €0.02.")
    unit = serializers.CharField(help_text="What one unit is, e.g. 'calls' (may be empty).")


class PlanFeatureOutputSerializer(serializers.Serializer):
    code = serializers.CharField(source="feature.code")
    name = serializers.CharField(source="feature.name")
    kind = serializers.CharField(source="feature.kind")
    limit = serializers.IntegerField(allow_null=True)
    unlimited = serializers.BooleanField()
    reset_period = serializers.CharField()
    metered_price = serializers.SerializerMethodField()

    @extend_schema_field(MeteredPriceOutputSerializer(allow_null=True))
    def get_metered_price(self, plan_feature: PlanFeature) -> dict[str, Any] | None:
        """Billed per unit used in the caller's zone, on top of the plan's price; null otherwise."""
        price = plan_feature_metered_price(plan_feature=plan_feature, zone=self.context.get("zone"))
        if price is None:
            return None
        return {
            "unit_amount": price.unit_amount,
            "currency": price.currency,
            "display": price.display_amount,
            "unit": plan_feature.feature.unit,
        }


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
        """A customer's own zone once their first purchase fixed it (whatever `country` says),
        else the trusted proxy's country, else `country` as a preview: what is charged is always
        the customer's own zone's price (docs/pricing-trust.md)."""
        if not hasattr(self, "_zone_cache"):
            query = PlanQuerySerializer(data=self.request.query_params)
            query.is_valid(raise_exception=True)
            pricing = customer_pricing_get(user=self.request.user)
            if pricing is not None:
                country = pricing.country or None
            else:
                country = trusted_country(meta=self.request.META) or query.validated_data.get("country")
            self._zone_cache = zone_for_country(country=country)
        return self._zone_cache

    def get_queryset(self) -> QuerySet[Plan]:
        return plan_list(zone=self._zone())

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "zone": self._zone()}

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "country",
                str,
                description="ISO 3166-1 alpha-2, e.g. JP: a preview for visitors; ignored once the "
                "customer's pricing country is fixed, and behind a trusted proxy naming one.",
            )
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(
        parameters=[
            OpenApiParameter("code", str, OpenApiParameter.PATH, description="The plan's code"),
            OpenApiParameter(
                "country",
                str,
                description="ISO 3166-1 alpha-2, e.g. JP: a preview for visitors; ignored once the "
                "customer's pricing country is fixed, and behind a trusted proxy naming one.",
            ),
        ]
    )
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)
