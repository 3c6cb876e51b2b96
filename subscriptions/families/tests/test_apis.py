"""Families over HTTP: every bad input is a 4xx in the error format, never a 500 or a partial write."""

import pytest

from payments_project.accounts.tests.factories import UserFactory
from payments_project.tests.helpers import token_client
from subscriptions.models import Family


@pytest.mark.django_db
def test_a_multipart_family_with_a_name_as_long_as_the_column_is_created() -> None:
    # when a customer creates a family with a 200-character name, sent as multipart
    owner = UserFactory(username="owner")
    response = token_client(owner).post("/api/v1/families/", {"name": "n" * 200}, format="multipart")

    # then it is created with that name
    assert response.status_code == 201
    assert Family.objects.get(owner=owner).name == "n" * 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "fmt", "field", "code"),
    [
        ({"name": "n" * 201}, "multipart", "name", "max_length"),
        ({"name": "n" * 201}, "json", "name", "max_length"),
        ({"name": "a\x00b"}, "json", "name", "null_characters_not_allowed"),
        ({"name": ["a", "b"]}, "json", "name", "invalid"),
    ],
)
def test_bad_family_input_is_a_400_and_writes_nothing(body, fmt, field, code) -> None:  # type: ignore[no-untyped-def]
    # when a customer sends a bad name
    owner = UserFactory(username="owner")
    response = token_client(owner).post("/api/v1/families/", body, format=fmt)

    # then the answer names the field and nothing was written
    assert response.status_code == 400
    assert response.json()["error"]["fields"][field][0]["code"] == code
    assert Family.objects.count() == 0


@pytest.mark.django_db
def test_a_body_that_is_not_an_object_is_a_400() -> None:
    owner = UserFactory(username="owner")
    response = token_client(owner).post("/api/v1/families/", b"[1, 2]", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert Family.objects.count() == 0
