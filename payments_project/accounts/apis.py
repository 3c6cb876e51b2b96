"""Who am I: the caller's identity and what the API lets it do."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from payments_project.accounts.selectors import can_act_for_any_user, can_read_any_user
from payments_project.api import subject_user_for_read


class MeOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.EmailField()
    is_staff = serializers.BooleanField()
    can_act_for_any_user = serializers.BooleanField(help_text="May pass user_id in writes too.")
    can_read_any_user = serializers.BooleanField(help_text="May pass user_id in reads.")


class MeView(APIView):
    """The caller, or with `?user_id=` (support, finance, service accounts) the user asked about."""

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "user_id",
                int,
                required=False,
                description="Another user: support and finance staff, service accounts, superusers.",
            )
        ],
        responses=MeOutputSerializer,
    )
    def get(self, request: Request) -> Response:
        user = subject_user_for_read(request, request.query_params.get("user_id"))
        data = {
            "id": user.pk,
            "username": user.get_username(),
            "email": user.email,
            "is_staff": user.is_staff,
            "can_act_for_any_user": can_act_for_any_user(user),
            "can_read_any_user": can_read_any_user(user),
        }
        return Response(MeOutputSerializer(data).data)
