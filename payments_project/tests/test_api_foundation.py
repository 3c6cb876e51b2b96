import time

import pytest
from django.contrib.auth.models import Group
from django.db import OperationalError
from django.http import Http404
from django.test import Client, override_settings
from django.urls import path
from django_redis import get_redis_connection
from rest_framework import exceptions
from rest_framework.test import APIClient
from rest_framework.views import APIView

from billing.payments.tests.factories import PaymentFactory
from payments_project import api
from payments_project.accounts.tests.factories import UserFactory
from payments_project.errors import Conflict
from payments_project.tests.helpers import token_client


class Boom(APIView):
    permission_classes: list[type] = []

    def get(self, request):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug")


urlpatterns = [path("api/v1/boom/", Boom.as_view())]


@pytest.mark.django_db
def test_me_with_a_token_returns_the_caller() -> None:
    user = UserFactory(username="ana")
    response = token_client(user).get("/api/v1/me/")
    assert response.status_code == 200
    assert response.json() == {
        "id": user.pk,
        "username": "ana",
        "email": "ana@example.com",
        "is_staff": False,
        "can_act_for_any_user": False,
        "can_read_any_user": False,
    }


@pytest.mark.django_db
def test_without_credentials_the_error_is_401_in_the_error_format(api_client: APIClient) -> None:
    response = api_client.get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "code": "not_authenticated",
            "message": "Authentication credentials were not provided.",
            "fields": {},
        }
    }


@pytest.mark.django_db
def test_a_bad_token_is_401_authentication_failed(api_client: APIClient) -> None:
    api_client.credentials(HTTP_AUTHORIZATION="Token nope")
    response = api_client.get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


@pytest.mark.django_db
def test_a_user_cannot_act_for_another_user() -> None:
    # given two users
    ana, bob = UserFactory(username="ana"), UserFactory(username="bob")

    # when ana asks as bob, then she is refused
    response = token_client(ana).get(f"/api/v1/me/?user_id={bob.pk}")
    assert response.status_code == 403
    assert response.json()["error"] == {
        "code": "permission_denied",
        "message": "Only staff and service accounts may read another user's data.",
        "fields": {},
    }


@pytest.mark.django_db
def test_a_service_account_may_act_for_any_user() -> None:
    # given a member of the service group (created by migrate) and a customer
    service = UserFactory(username="checkout-service")
    service.groups.add(Group.objects.get(name="service"))
    bob = UserFactory(username="bob")

    # when it acts for bob, then it gets bob
    response = token_client(service).get(f"/api/v1/me/?user_id={bob.pk}")
    assert response.status_code == 200
    assert response.json()["username"] == "bob"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("user_id", "status", "code"), [("abc", 400, "validation_error"), ("999999", 404, "not_found")]
)
def test_staff_acting_for_a_bad_user_id_gets_a_clear_error(user_id: str, status: int, code: str) -> None:
    staff = UserFactory(username="checkout-service")
    staff.groups.add(Group.objects.get(name="service"))
    response = token_client(staff).get(f"/api/v1/me/?user_id={user_id}")
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


@pytest.mark.django_db
@pytest.mark.parametrize("spelling", ["1_0", "+5", " 5", "\u0665", "5.0", "0", "-1", "x"])
def test_a_page_size_not_a_whole_number_from_1_is_a_400(spelling: str) -> None:
    # given a customer with three payments
    customer = UserFactory()
    PaymentFactory.create_batch(3, user=customer)

    # when the list is asked with an odd page size
    response = token_client(customer).get("/api/v1/payments/", {"page_size": spelling})

    # then it is refused on that parameter (it was read with int(), or silently replaced)
    assert (response.status_code, list(response.json()["error"]["fields"])) == (400, ["page_size"])


@pytest.mark.django_db
def test_a_page_size_is_read_and_one_over_the_maximum_is_capped_not_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given three payments, and the maximum page size lowered from 200 to 2 (three rows show it)
    customer = UserFactory()
    PaymentFactory.create_batch(3, user=customer)
    client = token_client(customer)
    monkeypatch.setattr(api.Pagination, "max_page_size", 2)

    one = client.get("/api/v1/payments/", {"page_size": "1"}).json()
    capped = client.get("/api/v1/payments/", {"page_size": "10000"}).json()

    assert (len(one["results"]), one["count"], one["next"] is not None) == (1, 3, True)
    assert (len(capped["results"]), capped["count"], capped["next"] is not None) == (2, 3, True)


@pytest.mark.django_db
def test_unknown_api_path_is_404_json(api_client: APIClient) -> None:
    response = api_client.get("/api/v1/nothing-here/")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "No such resource.", "fields": {}}}


@pytest.mark.django_db
def test_wrong_method_is_405_in_the_error_format(api_client: APIClient) -> None:
    response = api_client.delete("/api/v1/plans/")
    assert response.status_code == 405
    assert response.json() == {
        "error": {"code": "method_not_allowed", "message": 'Method "DELETE" not allowed.', "fields": {}}
    }


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__)
def test_an_unexpected_error_is_a_500_in_the_error_format_without_details(api_client: APIClient) -> None:
    response = api_client.get("/api/v1/boom/")
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal_error", "message": "An unexpected error occurred.", "fields": {}}
    }


@pytest.mark.django_db
@override_settings(RATELIMIT_RATES={"default": "100/m", "plans": "3/m"})
def test_rate_limit_in_redis_answers_429_with_retry_after(api_client: APIClient) -> None:
    # given a limit of 3 plan-list requests a minute per client
    statuses = [api_client.get("/api/v1/plans/").status_code for _ in range(3)]

    # when the fourth arrives in the same minute
    response = api_client.get("/api/v1/plans/")

    # then it is refused with 429, a Retry-After within the window, and the error body
    assert statuses == [200, 200, 200]
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    assert response.json()["error"]["code"] == "rate_limited"
    # and the counter lives in Redis, not in this process
    from django_redis import get_redis_connection

    keys = get_redis_connection("default").keys("*rl:*")
    assert len(keys) == 1


@pytest.mark.django_db
@override_settings(RATELIMIT_RATES={"default": "2/m", "plans": "100/m"})
def test_rate_limits_are_per_scope(api_client: APIClient) -> None:
    # given the default scope allows 2/min, the plans scope 100/min
    user = UserFactory()
    client = token_client(user)
    me = [client.get("/api/v1/me/").status_code for _ in range(3)]
    plans = [client.get("/api/v1/plans/").status_code for _ in range(3)]
    assert me == [200, 200, 429]
    assert plans == [200, 200, 200]


@pytest.mark.django_db
def test_request_id_is_echoed_or_made(api_client: APIClient) -> None:
    given = api_client.get("/health/live", HTTP_X_REQUEST_ID="abc-123")
    made = api_client.get("/health/live", HTTP_X_REQUEST_ID="bad id with spaces")
    assert given["X-Request-ID"] == "abc-123"
    assert len(made["X-Request-ID"]) == 32 and made["X-Request-ID"] != "bad id with spaces"


def test_openapi_schema_describes_the_api(api_client: APIClient, db: None) -> None:
    response = api_client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == "Payments back-office API"
    assert {"/api/v1/plans/", "/api/v1/plans/{code}/", "/api/v1/me/"} <= set(schema["paths"])


def test_docs_page_serves_swagger_ui_from_our_own_static_files(api_client: APIClient, db: None) -> None:
    page = api_client.get("/api/v1/docs/").content.decode()
    assert "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "cdn.jsdelivr.net" not in page


@pytest.mark.django_db
@override_settings(DEBUG=True)
def test_an_unknown_api_route_is_a_json_404_even_under_debug(client) -> None:  # type: ignore[no-untyped-def]
    # when anyone asks for a route the API does not have, with DEBUG on (as under `make run`)
    response = client.get("/api/v1/no-such-thing/here")

    # then the answer is the JSON error format, not Django's HTML debug page
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": {"code": "not_found", "message": "No such resource.", "fields": {}}}


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/usage/nonexistent/",
        "/api/v1/usage/reservations/1234567890123456789/release/",  # an id past the route's 18 digits
        "/api/v1/families/1/members/1234567890123456789",
    ],
)
def test_an_unsafe_request_to_an_unknown_api_route_is_a_json_404(method: str, path: str) -> None:
    # given a browser-like client that enforces CSRF, as a real session would
    client = Client(enforce_csrf_checks=True)

    # when it writes to a route the API does not have
    response = getattr(client, method)(path, "{}", content_type="application/json")

    # then the answer is the JSON 404, not Django's HTML "CSRF verification failed" page
    assert (response.status_code, response["Content-Type"]) == (404, "application/json")
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("exc", "answer"),
    [
        (
            exceptions.Throttled(7),
            (
                429,
                "rate_limited",
                "Request was throttled. Expected available in 7 seconds.",
                {"Retry-After": "7"},
            ),
        ),
        (
            OperationalError("gone"),
            (
                503,
                "database_unavailable",
                "The service cannot reach its database; retry shortly.",
                {"Retry-After": "5"},
            ),
        ),
        (
            Conflict("Busy.", headers={"Retry-After": "2"}),
            (409, "conflict", "Busy.", {"Retry-After": "2"}),
        ),
        (Http404("secret"), (404, "not_found", "Not found.", {})),
        (RuntimeError("bug"), (500, "internal_error", "An unexpected error occurred.", {})),
    ],
)
def test_error_answer_renders_each_kind_of_error(exc: Exception, answer: tuple[int, str, str, dict]) -> None:
    status, code, message, headers = answer

    assert api.error_answer(exc) == (status, api.error_body(code, message), headers)


def test_error_answer_sets_www_authenticate_from_the_auth_header_drf_gives_the_exception() -> None:
    exc = exceptions.NotAuthenticated()
    exc.auth_header = "Token"  # type: ignore[attr-defined]

    assert api.error_answer(exc).headers == {"WWW-Authenticate": "Token"}


@pytest.mark.parametrize(("count", "time_left", "wait"), [(3, 30, None), (4, 30, 30), (4, 0, 1), (4, -2, 1)])
def test_ratelimit_wait_is_the_rest_of_the_window_and_at_least_one_second(
    count: int, time_left: int, wait: int | None
) -> None:
    # given a limit of 3 and a window ending in `time_left` seconds
    usage = api.ratelimit_usage(count=count, limit=3, window=int(time.time()) + time_left)

    # when / then
    assert api.ratelimit_wait(usage) == wait
    assert api.ratelimit_wait(None) is None


@override_settings(RATELIMIT_ENABLE=False)
def test_ratelimit_rate_is_none_when_limiting_is_off() -> None:
    assert api.ratelimit_rate("entitlements") is None


def test_the_ratelimit_script_counts_and_sets_the_ttl_once() -> None:
    # given the throttle's script (built with ratelimit_count_lua) and a fresh counter
    conn = get_redis_connection("default")
    script = conn.register_script(api._RATELIMIT_INCR)

    # when it counts twice, the second time with another ttl
    counts = [script(keys=["test:rl:counter"], args=[ttl], client=conn) for ttl in (90, 10)]

    # then
    assert counts == [1, 2]
    assert 80 < conn.ttl("test:rl:counter") <= 90
