"""Dunning over the API: the caller's open case, for the frontend's "update your card" banner."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from payments_project.api import WholeNumberField, subject_user_for_read
from subscriptions.dunning.selectors import next_retry_at, open_case_for_user, what_to_do


class DunningCaseOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    subscription_id = serializers.IntegerField()
    plan = serializers.CharField(source="subscription.plan.code")
    stage = serializers.ChoiceField(choices=["past_due", "suspended"])
    amount_due = serializers.IntegerField(help_text="Minor units of the currency.")
    currency = serializers.CharField()
    opened_at = serializers.DateTimeField()
    next_retry_at = serializers.DateTimeField(allow_null=True, help_text="None: no automatic retry is left.")
    cancel_at = serializers.DateTimeField(help_text="When the subscription is cancelled if still unpaid.")
    needs_new_card = serializers.BooleanField(
        help_text="The card was refused for good: only a new card helps."
    )
    action = serializers.ChoiceField(
        choices=["update_card", "update_card_or_wait"], help_text="What the banner should ask for."
    )


class OpenDunningOutputSerializer(serializers.Serializer):
    case = DunningCaseOutputSerializer(allow_null=True, help_text="None: nothing is unpaid.")


class OpenDunningQuerySerializer(serializers.Serializer):
    user_id = WholeNumberField(
        required=False,
        min_value=1,
        max_value=2**31 - 1,
        help_text="Another user's case: support, finance, service accounts.",
    )


class OpenDunningView(APIView):
    # One object, not a list (a ViewSet's `list` is documented as an array).
    ratelimit_scope = "default"

    @extend_schema(
        parameters=[OpenDunningQuerySerializer],
        responses=OpenDunningOutputSerializer,
        summary="The caller's open dunning case (an unpaid renewal), if any",
    )
    def get(self, request: Request) -> Response:
        query = OpenDunningQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        user = subject_user_for_read(request, query.validated_data.get("user_id"))
        case = open_case_for_user(user_id=user.pk)
        if case is None:
            return Response({"case": None})
        data = {
            "id": case.pk,
            "subscription_id": case.subscription_id,
            "subscription": case.subscription,
            "stage": case.stage,
            "amount_due": case.amount_due,
            "currency": case.currency,
            "opened_at": case.opened_at,
            "next_retry_at": next_retry_at(case=case),
            "cancel_at": case.cancel_at,
            "needs_new_card": case.needs_new_card,
            "action": what_to_do(case=case),
        }
        return Response(OpenDunningOutputSerializer({"case": data}).data)
