"""The staff console's refusal page: what the role may not do here, and where to go instead."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse

from payments_project.api import error_body

ROLE_CAN = {
    "support": "read everything in the back-office: customers, payments, subscriptions, events",
    "finance": "refund, act on subscriptions and entitlements, edit the catalog, reprocess events",
}


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler403: a page in the console's own style for people, the error format for the API."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("permission_denied", "You may not do this."), status=403)
    user: Any = request.user
    roles = sorted(user.groups.values_list("name", flat=True)) if user.is_authenticated else []
    context = {
        **(admin.site.each_context(request) if user.is_authenticated and user.is_staff else {}),
        "title": "Not allowed",
        "roles": roles,
        "role_can": [(role, ROLE_CAN[role]) for role in roles if role in ROLE_CAN],
        "reason": str(exception or ""),
    }
    response = TemplateResponse(request, "403.html", context, status=403)
    response.render()
    return response
