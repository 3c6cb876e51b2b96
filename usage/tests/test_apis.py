from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone as django_timezone
from rest_framework.test import APIClient

from payments_project.accounts.tests.factories import UserFactory
from usage import apis
from usage.apis import EventResultSerializer
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db


def _client(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _service() -> Any:
    user = UserFactory()
    user.groups.add(Group.objects.get(name="service"))
    return user


def test_a_customer_records_an_event_and_a_replay_answers_the_same(quota: Callable[..., Any]) -> None:
    user = quota(limit=10)
    body = {"feature": "api_calls", "quantity": 4, "idempotency_key": "abc", "operation": "upload"}

    first = _client(user).post("/api/v1/usage/events/", body, format="json")
    again = _client(user).post("/api/v1/usage/events/", body, format="json")
    reused = _client(user).post("/api/v1/usage/events/", {**body, "quantity": 5}, format="json")

    assert (first.status_code, first.json()["status"], first.json()["used"], first.json()["remaining"]) == (
        201,
        "recorded",
        4,
        6,
    )
    assert (again.status_code, again.json()["status"], again.json()["record_id"]) == (
        200,
        "duplicate",
        first.json()["record_id"],
    )
    assert (reused.status_code, reused.json()["error"]["code"]) == (409, "idempotency_key_reused")


def test_a_refused_event_is_429_with_the_quota(quota: Callable[..., Any]) -> None:
    user = quota(limit=3)

    response = _client(user).post(
        "/api/v1/usage/events/",
        {"feature": "api_calls", "quantity": 4, "idempotency_key": "x"},
        format="json",
    )

    error = response.json()["error"]
    assert (response.status_code, error["code"], error["limit"], error["used"], error["remaining"]) == (
        429,
        "quota_exceeded",
        3,
        0,
        3,
    )
    assert error["resets_at"] is not None
    assert UsageRecord.objects.count() == 0


def test_the_batch_answers_each_event(quota: Callable[..., Any]) -> None:
    user = quota(limit=10)
    events = [
        {"feature": "api_calls", "quantity": 6, "idempotency_key": "a"},
        {"feature": "api_calls", "quantity": 6, "idempotency_key": "b"},
        {"feature": "nope", "quantity": 1, "idempotency_key": "c"},
    ]

    response = _client(user).post("/api/v1/usage/batch/", {"events": events}, format="json")

    assert response.status_code == 200
    assert [(r["status"], r["code"]) for r in response.json()["results"]] == [
        ("recorded", None),
        ("refused", "quota_exceeded"),
        ("refused", "unknown_feature"),
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"feature": "api_calls", "idempotency_key": "k", "quantity": 0},
        {"feature": "api_calls", "idempotency_key": "k", "quantity": 10**13},
        {"feature": "a" * 65, "idempotency_key": "k"},
        {"feature": "api_calls", "idempotency_key": "k" * 201},
        {"feature": "api_calls", "idempotency_key": "k\x00"},
        {"feature": "api_calls", "idempotency_key": "k", "metadata": {"x": "y" * 5000}},
        {"feature": "api_calls", "idempotency_key": "k", "metadata": "not an object"},
        {"feature": "api_calls", "idempotency_key": "k", "occurred_at": "yesterday"},
        {"feature": "api_calls", "idempotency_key": "k", "user_id": "x"},
        {"feature": "api_calls"},
        # JSON numbers only: a number in a string, a whole float or a bool is the client's type error
        {"feature": "api_calls", "idempotency_key": "k", "quantity": "3"},
        {"feature": "api_calls", "idempotency_key": "k", "quantity": 3.0},
        {"feature": "api_calls", "idempotency_key": "k", "quantity": True},
        {"feature": "api_calls", "idempotency_key": "k", "resource_size": "10"},
    ],
)
def test_bounded_input_is_refused_with_400(quota: Callable[..., Any], body: dict[str, Any]) -> None:
    user = quota(limit=10)

    response = _client(user).post("/api/v1/usage/events/", body, format="json")

    assert (response.status_code, response.json()["error"]["code"]) == (400, "validation_error")


@pytest.mark.parametrize("path", ["/api/v1/usage/events/", "/api/v1/usage/batch/"])
def test_the_largest_64_bit_ids_and_sizes_are_taken(quota: Callable[..., Any], path: str) -> None:
    # given a customer, and a service account naming the largest user id there can be
    user = quota(limit=10)
    event = {"feature": "api_calls", "idempotency_key": "edge", "resource_size": 2**63 - 1}
    stranger = {"feature": "api_calls", "idempotency_key": "edge", "user_id": 2**63 - 1}
    body: Callable[[dict[str, Any]], dict[str, Any]] = (
        (lambda e: {"events": [e]}) if path.endswith("batch/") else (lambda e: e)
    )

    # when the customer records an event of the largest size, and the service one for that id
    mine = _client(user).post(path, body(event), format="json")
    theirs = _client(_service()).post(path, body(stranger), format="json")

    # then the size is stored whole, and the unknown user is a 404, not a 400 or a 500
    assert mine.status_code in (200, 201)
    assert UsageRecord.objects.get().resource_size == 2**63 - 1
    assert (theirs.status_code, theirs.json()["error"]["code"]) == (404, "not_found")


def test_a_full_batch_with_metadata_passes_the_body_limit(quota: Callable[..., Any]) -> None:
    # given 1,000 events with 2 KiB of metadata each: about 2.1 MB, over the 1 MiB of other bodies
    user = quota(limit=None)
    events = [
        {"feature": "api_calls", "idempotency_key": f"k{i}", "metadata": {"note": "n" * 2000}}
        for i in range(1000)
    ]

    response = _client(user).post("/api/v1/usage/batch/", {"events": events}, format="json")

    assert response.status_code == 200
    assert {r["status"] for r in response.json()["results"]} == {"recorded"}
    assert UsageRecord.objects.count() == 1000


def test_a_batch_over_1000_events_is_refused(quota: Callable[..., Any]) -> None:
    user = quota(limit=None)
    events = [{"feature": "api_calls", "idempotency_key": f"k{i}"} for i in range(1001)]

    response = _client(user).post("/api/v1/usage/batch/", {"events": events}, format="json")

    assert response.status_code == 400


def test_a_service_account_records_for_a_user_and_a_customer_may_not(quota: Callable[..., Any]) -> None:
    user = quota(limit=10)
    body = {"feature": "api_calls", "idempotency_key": "s", "user_id": user.pk}

    by_service = _client(_service()).post("/api/v1/usage/events/", body, format="json")
    by_other = _client(UserFactory()).post("/api/v1/usage/events/", body, format="json")

    assert by_service.status_code == 201
    assert by_other.status_code == 403
    assert UsageRecord.objects.get().user_id == user.pk


def test_anonymous_is_refused() -> None:
    assert APIClient().post("/api/v1/usage/events/", {}, format="json").status_code == 401
    assert APIClient().get("/api/v1/usage/").status_code == 401


def test_summary_and_history(quota: Callable[..., Any]) -> None:
    user = quota(limit=10, period_start=datetime(2026, 11, 1, tzinfo=UTC))
    client = _client(user)
    client.post(
        "/api/v1/usage/events/",
        {"feature": "api_calls", "quantity": 3, "idempotency_key": "a"},
        format="json",
    )
    client.post(
        "/api/v1/usage/events/",
        {"feature": "api_calls", "quantity": 2, "idempotency_key": "b", "operation": "x"},
        format="json",
    )
    support = UserFactory(is_staff=True)
    support.groups.add(Group.objects.get(name="support"))

    summary = client.get("/api/v1/usage/summary/?feature=api_calls").json()
    history = client.get("/api/v1/usage/?operation=x").json()
    by_support = _client(support).get(f"/api/v1/usage/?user_id={user.pk}").json()
    unknown = client.get("/api/v1/usage/summary/?feature=nope")

    assert (summary["limit"], summary["used"], summary["remaining"], summary["subject"]) == (
        10,
        5,
        5,
        f"u{user.pk}",
    )
    assert [r["quantity"] for r in history["results"]] == [2]
    assert by_support["count"] == 2
    assert unknown.status_code == 404


def test_reservations_hold_settle_and_release(quota: Callable[..., Any]) -> None:
    user = quota(limit=10)
    client = _client(user)

    held = client.post(
        "/api/v1/usage/reservations/",
        {"feature": "api_calls", "quantity": 8, "idempotency_key": "r"},
        format="json",
    )
    refused = client.post(
        "/api/v1/usage/events/",
        {"feature": "api_calls", "quantity": 3, "idempotency_key": "e"},
        format="json",
    )
    settled = client.post(
        f"/api/v1/usage/reservations/{held.json()['id']}/settle/", {"quantity": 5}, format="json"
    )
    after = client.get("/api/v1/usage/summary/?feature=api_calls").json()
    second = client.post(
        "/api/v1/usage/reservations/",
        {"feature": "api_calls", "quantity": 5, "idempotency_key": "r2"},
        format="json",
    )
    released = client.post(f"/api/v1/usage/reservations/{second.json()['id']}/release/")
    final = client.get("/api/v1/usage/summary/?feature=api_calls").json()

    assert (held.status_code, refused.status_code) == (201, 429)
    assert (settled.status_code, settled.json()["status"]) == (200, "settled")
    assert (after["used"], after["reserved"]) == (5, 0)
    assert (released.status_code, released.json()["status"]) == (200, "released")
    assert (final["used"], final["reserved"], final["remaining"]) == (5, 0, 5)


def test_an_idempotency_key_is_kept_exactly_as_sent(quota: Callable[..., Any]) -> None:
    # given a customer who recorded "job" with 2 units
    user = quota(limit=10)
    client = _client(user)
    client.post(
        "/api/v1/usage/events/",
        {"feature": "api_calls", "quantity": 2, "idempotency_key": "job"},
        format="json",
    )

    # when " job " is sent with 3 units alone, and "job " with 1 in a batch
    single = client.post(
        "/api/v1/usage/events/",
        {"feature": "api_calls", "quantity": 3, "idempotency_key": " job "},
        format="json",
    )
    batch = client.post(
        "/api/v1/usage/batch/",
        {"events": [{"feature": "api_calls", "quantity": 1, "idempotency_key": "job "}]},
        format="json",
    )

    # then each is a key of its own: recorded, not a replay of "job" nor a 409
    assert (single.status_code, single.json()["status"]) == (201, "recorded")
    assert batch.json()["results"][0]["status"] == "recorded"
    assert sorted(UsageRecord.objects.values_list("idempotency_key", "quantity")) == [
        (" job ", 3),
        ("job", 2),
        ("job ", 1),
    ]


def test_a_retried_reservation_answers_the_same_hold_with_200(quota: Callable[..., Any]) -> None:
    # given a customer who reserved 4 units with the key "r"
    user = quota(limit=10)
    client = _client(user)
    body = {"feature": "api_calls", "quantity": 4, "idempotency_key": "r"}
    first = client.post("/api/v1/usage/reservations/", body, format="json")

    # when the same request is sent again, and once with another quantity
    again = client.post("/api/v1/usage/reservations/", body, format="json")
    other = client.post("/api/v1/usage/reservations/", {**body, "quantity": 5}, format="json")
    summary = client.get("/api/v1/usage/summary/?feature=api_calls").json()

    # then the retry is the same hold (200, as a replayed event), the other 409, 4 units held once
    assert (first.status_code, again.status_code, again.json()) == (201, 200, first.json())
    assert (other.status_code, other.json()["error"]["code"]) == (409, "idempotency_key_reused")
    assert (summary["used"], summary["reserved"]) == (0, 4)


def test_a_reservation_takes_json_numbers_only(quota: Callable[..., Any]) -> None:
    # given a customer with a quota of 10 and a reservation of 8
    user = quota(limit=10)
    client = _client(user)
    held = client.post(
        "/api/v1/usage/reservations/",
        {"feature": "api_calls", "quantity": 8, "idempotency_key": "r"},
        format="json",
    )

    # when a reservation and a settlement give their quantity as a string
    reserved = client.post(
        "/api/v1/usage/reservations/",
        {"feature": "api_calls", "quantity": "1", "idempotency_key": "r2"},
        format="json",
    )
    settled = client.post(
        f"/api/v1/usage/reservations/{held.json()['id']}/settle/", {"quantity": "5"}, format="json"
    )
    summary = client.get("/api/v1/usage/summary/?feature=api_calls").json()

    # then both are refused on that field and the first reservation is still held
    assert (reserved.status_code, list(reserved.json()["error"]["fields"])) == (400, ["quantity"])
    assert (settled.status_code, list(settled.json()["error"]["fields"])) == (400, ["quantity"])
    assert (summary["used"], summary["reserved"]) == (0, 8)


def test_the_endpoints_are_in_the_openapi_schema() -> None:
    schema = APIClient().get("/api/v1/schema/?format=json").json()

    for path in ("/api/v1/usage/", "/api/v1/usage/events/", "/api/v1/usage/batch/", "/api/v1/usage/summary/"):
        assert path in schema["paths"]


def test_only_the_owner_or_a_service_account_closes_a_reservation(quota: Callable[..., Any]) -> None:
    owner = quota(limit=10)
    held = _client(owner).post(
        "/api/v1/usage/reservations/",
        {"feature": "api_calls", "quantity": 2, "idempotency_key": "r"},
        format="json",
    )
    url = f"/api/v1/usage/reservations/{held.json()['id']}/release/"

    by_other = _client(UserFactory()).post(url)
    by_service = _client(_service()).post(url)

    assert by_other.status_code == 404
    assert (by_service.status_code, by_service.json()["status"]) == (200, "released")


def test_a_limit_that_never_resets_has_no_period_in_results_summary_and_history(
    quota: Callable[..., Any],
) -> None:
    # given a limit feature (projects) that never resets
    from billing.catalog.tests.factories import FeatureFactory
    from billing.models import Feature, PlanFeature

    FeatureFactory(code="projects", kind=Feature.Kind.LIMIT)
    user = quota("projects", limit=3, reset_period=PlanFeature.Reset.NEVER)
    client = _client(user)
    body = {"feature": "projects", "quantity": 1, "idempotency_key": "p1"}
    # when an event is recorded, replayed, refused and sent in a batch
    recorded = client.post("/api/v1/usage/events/", body, format="json").json()
    replayed = client.post("/api/v1/usage/events/", body, format="json").json()
    refused = client.post(
        "/api/v1/usage/events/", {**body, "quantity": 5, "idempotency_key": "p2"}, format="json"
    ).json()
    batch = client.post(
        "/api/v1/usage/batch/",
        {
            "events": [
                {"feature": "projects", "quantity": 1, "idempotency_key": "p3"},
                {"feature": "projects", "quantity": 9, "idempotency_key": "p4"},
            ]
        },
        format="json",
    ).json()
    summary = client.get("/api/v1/usage/summary/?feature=projects").json()
    history = client.get("/api/v1/usage/?feature=projects").json()
    # then none of them names a period (no 1970-01-01), and the summary agrees
    assert (recorded["status"], recorded["period_start"], recorded["resets_at"]) == ("recorded", None, None)
    assert (replayed["status"], replayed["period_start"]) == ("duplicate", None)
    assert (refused["error"]["code"], refused["error"]["resets_at"]) == ("quota_exceeded", None)
    assert [(r["status"], r["period_start"]) for r in batch["results"]] == [
        ("recorded", None),
        ("refused", None),
    ]
    assert (summary["period_start"], summary["period_end"], summary["used"]) == (None, None, 2)
    assert [r["period_start"] for r in history["results"]] == [None, None]


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=BoUnDaRy"],
)
def test_a_form_body_is_refused_415_not_recorded_without_its_metadata(
    quota: Callable[..., Any], content_type: str
) -> None:
    user = quota(limit=10)
    part = 'Content-Disposition: form-data; name="feature"\r\n\r\napi_calls'
    body = (
        "feature=api_calls&idempotency_key=form&metadata=abc"
        if content_type.startswith("application")
        else f"--BoUnDaRy\r\n{part}\r\n--BoUnDaRy--\r\n"
    )

    response = _client(user).generic("POST", "/api/v1/usage/events/", body, content_type=content_type)

    assert (response.status_code, response.json()["error"]["code"]) == (415, "unsupported_media_type")
    assert UsageRecord.objects.count() == 0


def test_period_bounds_are_written_as_the_result_serializer_writes_them() -> None:
    # given a leap day's midnight in UTC, the same instant at +02:00, and one with microseconds
    plus_two = timezone(timedelta(hours=2))
    values = [
        datetime(2028, 2, 29, tzinfo=UTC),
        datetime(2028, 2, 29, 2, 0, tzinfo=plus_two),
        datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]

    # when each is written by the answer's formatter and by EventResultSerializer's field
    field = EventResultSerializer().fields["period_start"]
    written = [apis._datetime_text(value) for value in values]

    # then both write the same text, in UTC, the same instant alike
    assert written == [field.to_representation(value) for value in values]
    assert written == ["2028-02-29T00:00:00Z", "2028-02-29T00:00:00Z", "2026-12-31T23:59:59.999999Z"]


def test_the_result_serializer_writes_utc_whatever_time_zone_is_active() -> None:
    # given a request that activated another time zone
    field = EventResultSerializer().fields["resets_at"]
    value = datetime(2027, 1, 1, tzinfo=UTC)

    # when the serializer and the hot path's formatter write a period bound
    with django_timezone.override("Europe/Paris"):
        written = (field.to_representation(value), apis._datetime_text(value))

    # then both write it in UTC
    assert written == ("2027-01-01T00:00:00Z", "2027-01-01T00:00:00Z")
