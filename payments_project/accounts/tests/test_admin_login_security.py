"""The staff console's login: locked after repeated failures (per account and per address),
unlocked by a superuser; a TOTP code required for finance and superusers in production."""

from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import Group
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from payments_project.accounts.tests.factories import UserFactory
from payments_project.tests.test_settings import PRODUCTION, _run

PASSWORD = "a-long-staff-password-1"


def _staff(role: str | None, username: str) -> Any:
    user = UserFactory(username=username, is_staff=True, is_superuser=role is None)
    user.set_password(PASSWORD)
    user.save()
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def _log_in(client: Client, username: str, password: str = PASSWORD, **extra: str) -> Any:
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password, **extra},
        REMOTE_ADDR="198.51.100.7",
    )


def _logged_in(response: Any) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


@pytest.mark.django_db
def test_an_account_is_locked_after_the_failure_limit_and_a_superuser_unlocks_it(settings) -> None:  # type: ignore[no-untyped-def]
    settings.AXES_FAILURE_LIMIT = 3
    support = _staff("support", "sam")
    root = _staff(None, "root")

    # when three wrong passwords are tried for sam (each from another address)
    for n in range(3):
        Client().post("/admin/login/", {"username": "sam", "password": "wrong"}, REMOTE_ADDR=f"203.0.113.{n}")

    # then the right password is refused too (429), from any address
    locked = _log_in(Client(), "sam")
    assert locked.status_code == 429
    assert not _logged_in(locked)

    # when a superuser sees the lockout in the admin and deletes it
    root_client = Client()
    root_client.force_login(root)
    page = root_client.get("/admin/axes/accessattempt/")
    assert page.status_code == 200 and "sam" in page.content.decode()
    attempts = list(AccessAttempt.objects.filter(username="sam").values_list("pk", flat=True))
    deleted = root_client.post(
        "/admin/axes/accessattempt/",
        {"action": "delete_selected", "_selected_action": attempts, "post": "yes"},
    )
    assert deleted.status_code == 302
    assert not AccessAttempt.objects.filter(username="sam").exists()

    # then sam logs in again
    assert _logged_in(_log_in(Client(), support.username))


@pytest.mark.django_db
def test_an_address_is_locked_whatever_account_it_tries(settings) -> None:  # type: ignore[no-untyped-def]
    settings.AXES_FAILURE_LIMIT = 3
    _staff("support", "sam")
    for n in range(3):
        Client().post("/admin/login/", {"username": f"guess{n}", "password": "x"}, REMOTE_ADDR="198.51.100.7")

    # the address is locked, even for a real account with its password; another address is not
    assert _log_in(Client(), "sam").status_code == 429
    other = Client().post(
        "/admin/login/?next=/admin/", {"username": "sam", "password": PASSWORD}, REMOTE_ADDR="192.0.2.1"
    )
    assert _logged_in(other)


@pytest.mark.django_db
def test_support_staff_do_not_see_lockouts() -> None:
    client = Client()
    client.force_login(_staff("support", "sam"))
    assert client.get("/admin/axes/accessattempt/").status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "required"), [("finance", True), (None, True), ("support", False)])
def test_a_totp_code_is_required_for_finance_and_superusers_when_required(settings, role, required) -> None:  # type: ignore[no-untyped-def]
    settings.ADMIN_OTP_REQUIRED = True
    user = _staff(role, "staffer")
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)

    # (the right code first: after a wrong one django-otp throttles the device for a while)
    without = _log_in(Client(), "staffer")
    right = _log_in(Client(), "staffer", otp_token=f"{totp(device.bin_key):06d}")
    wrong = _log_in(Client(), "staffer", otp_token="000000" if totp(device.bin_key) != 0 else "111111")

    assert _logged_in(without) is not required
    assert not _logged_in(wrong)
    assert _logged_in(right)


@pytest.mark.django_db
def test_a_session_without_a_code_is_sent_to_log_in_once_codes_are_required(settings) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(_staff("finance", "fin"))
    settings.ADMIN_OTP_REQUIRED = True

    response = client.get("/admin/billing/payment/")

    assert (response.status_code, response["Location"]) == (
        302,
        "/admin/login/?next=%2Fadmin%2Fbilling%2Fpayment%2F",
    )


@pytest.mark.django_db
def test_a_session_without_a_code_is_anonymous_to_the_api_once_codes_are_required(settings) -> None:  # type: ignore[no-untyped-def]
    # given a finance session opened before codes were required
    client = Client()
    client.force_login(_staff("finance", "fin"))
    settings.ADMIN_OTP_REQUIRED = True

    # when it calls the API (where finance may act for any customer)
    response = client.get("/api/v1/payments/")

    # then it is not let in
    assert (response.status_code, response.json()["error"]["code"]) == (401, "not_authenticated")


@pytest.mark.django_db
def test_codes_are_optional_in_development(settings) -> None:  # type: ignore[no-untyped-def]
    settings.ADMIN_OTP_REQUIRED = False
    _staff("finance", "fin")
    assert _logged_in(_log_in(Client(), "fin"))


def test_production_settings_require_codes_and_lock_out() -> None:
    code = (
        "import json, django; from django.conf import settings as s; django.setup();"
        "print(json.dumps([s.ADMIN_OTP_REQUIRED, s.AXES_FAILURE_LIMIT, s.AXES_LOCKOUT_PARAMETERS,"
        " s.AUTHENTICATION_BACKENDS[0]]))"
    )
    result = _run(PRODUCTION, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        '[true, 5, ["username", "ip_address"], "axes.backends.AxesStandaloneBackend"]'
    )


@pytest.mark.django_db
def test_the_first_superuser_logs_in_with_a_static_code(settings) -> None:  # type: ignore[no-untyped-def]
    from django_otp.plugins.otp_static.models import StaticDevice

    settings.ADMIN_OTP_REQUIRED = True
    root = _staff(None, "root")
    # as `manage.py addstatictoken root` leaves it
    device = StaticDevice.objects.create(user=root, name="backup")
    device.token_set.create(token="bootstrap1")

    assert _logged_in(_log_in(Client(), "root", otp_token="bootstrap1"))
    assert not _logged_in(_log_in(Client(), "root", otp_token="bootstrap1"))  # used once
