"""Two-factor login to the staff console: a TOTP code (django-otp) after the password.

Required (ADMIN_OTP_REQUIRED, on by default in production) for superusers and the finance
group, who move money; optional elsewhere: a code given is checked all the same. A staff
member's TOTP device is added by a superuser under *TOTP devices* in the admin (its QR code / URL
goes into any authenticator app); the first superuser logs in once with a static token from
`manage.py addstatictoken <username>`. See docs/security.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.http import urlencode
from django_otp.forms import OTPAuthenticationFormMixin
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

OTP_ROLES = frozenset({"finance"})


def otp_required_for(user: Any) -> bool:
    """Whether `user` must give a one-time code to use the staff console."""
    if not settings.ADMIN_OTP_REQUIRED or not getattr(user, "is_staff", False):
        return False
    return bool(user.is_superuser or user.groups.filter(name__in=OTP_ROLES).exists())


class StaffAuthenticationForm(AdminAuthenticationForm, OTPAuthenticationFormMixin):
    """The admin's login form with a one-time code, checked when required or given."""

    otp_token = forms.CharField(
        required=False,
        max_length=16,
        label="One-time code",
        help_text="From your authenticator app (required for finance and superusers in production).",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )

    def _chosen_device(self, user: Any) -> Any:
        """The device the code is for (the form has no device picker): a numeric code is the
        TOTP app's, anything else a static code (`manage.py addstatictoken`). One device is
        tried, so a code never counts as a failure against another device."""
        token = str(self.cleaned_data.get("otp_token") or "")
        model = TOTPDevice if token.isdigit() else StaticDevice
        return model.objects.filter(user=user, confirmed=True).order_by("pk").first()

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        user = self.get_user()
        if user is not None and (otp_required_for(user) or self.cleaned_data.get("otp_token")):
            self.clean_otp(user)
        return cleaned


class AdminOTPRequiredMiddleware:
    """A session of a user who must use a one-time code but did not (logged in before it was
    required, or by another way in) is logged out: sent to log in on the staff console, and
    anonymous to the API (a session is one of the API's ways in; tokens are not sessions)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if (
            settings.ADMIN_OTP_REQUIRED
            and request.path_info.startswith(("/admin/", "/api/"))
            and user is not None
            and user.is_authenticated
            and not user.is_verified()
            and otp_required_for(user)
        ):
            logout(request)
            if request.path_info.startswith("/admin/"):
                login = reverse("admin:login")
                return HttpResponseRedirect(f"{login}?{urlencode({'next': request.get_full_path()})}")
        return self.get_response(request)
