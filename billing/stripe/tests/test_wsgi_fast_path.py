"""The webhook's WSGI layer (billing.stripe.wsgi): deliveries it takes are answered and recorded as
the view alone would; everything else reaches Django untouched.

Each case is delivered once through the WSGI layer (in front of Django's handler, as
payments_project/wsgi.py serves it) and once to the view alone (both fast paths removed).
Transactional tests: the layer hands on any request made inside a transaction, as tests are.
The stand-in answers the processing that eager Celery runs after each accepted delivery.
"""

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest
import stripe
from django.conf import settings
from django.db import connection
from django.test import Client, RequestFactory
from djstripe.models import WebhookEventTrigger
from prometheus_client import REGISTRY

from billing.models import StripeEvent
from billing.stripe.tests.events import SECRET, endpoint, event
from billing.stripe.wsgi import stripe_webhook_wsgi
from devtools.testing import StandinServer
from payments_project.tests.helpers import CountingDjango

FAST_PATH = "billing.stripe.middleware.StripeWebhookFastPathMiddleware"
PAYLOAD = json.dumps(event("balance.available", {"object": "balance", "available": []}, id="evt_wsgi_1"))
Answer = tuple[int, bytes, dict[str, str]]


def _signed(body: str, *, secret: str = SECRET, offset: int = 0) -> str:
    t = int(time.time()) + offset
    return f"t={t},v1={stripe.WebhookSignature._compute_signature(f'{t}.{body}', secret)}"


def _through_wsgi(app: Callable[..., Iterable[bytes]], body: str, *, path: str = "", **extra: str) -> Answer:
    request = RequestFactory().post(
        path or f"/djstripe/webhook/{endpoint().djstripe_uuid}/",
        data=body,
        content_type="application/json",
        **{"HTTP_HOST": "testserver", **extra},
    )
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        answer["status"], answer["headers"] = int(status.split()[0]), dict(headers)

    chunks = app(request.environ, start_response)
    content = b"".join(chunks)
    if hasattr(chunks, "close"):
        chunks.close()
    return answer["status"], content, _without_request_id(answer["headers"])


def _to_view_alone(body: str, **extra: str) -> Answer:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "MIDDLEWARE", [name for name in settings.MIDDLEWARE if name != FAST_PATH])
        response = Client().post(
            f"/djstripe/webhook/{endpoint().djstripe_uuid}/",
            data=body,
            content_type="application/json",
            **{"HTTP_HOST": "testserver", **extra},
        )
    return response.status_code, response.content, _without_request_id(dict(response.headers))


def _without_request_id(headers: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name != "X-Request-ID"}


def _stored() -> tuple[list[Any], list[Any]]:
    triggers = [
        (row.valid, row.body, row.remote_ip, dict(row.headers), row.webhook_endpoint_id)
        for row in WebhookEventTrigger.objects.order_by("pk")
    ]
    inbox = list(StripeEvent.objects.values_list("stripe_event_id", "type", "status", "deliveries"))
    return triggers, inbox


def _forget() -> None:
    WebhookEventTrigger.objects.all().delete()
    StripeEvent.objects.all().delete()


TAKEN = {
    "good": [{}],
    "duplicate": [{}, {}],
    "forwarded address with a port": [{"HTTP_X_FORWARDED_FOR": "203.0.113.9:4711, 10.0.0.1"}],
    "bad forwarded address": [{"HTTP_X_FORWARDED_FOR": "not-an-address"}],
    "UTF-8 named": [{"CONTENT_TYPE": "application/json; charset=utf-8"}],
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", TAKEN.keys())
def test_a_delivery_that_verifies_is_answered_before_django_as_the_view_answers_it(
    case: str, stripe_standin: StandinServer
) -> None:
    # given deliveries that verify, answered by the WSGI layer in front of Django
    django = CountingDjango()
    app = stripe_webhook_wsgi(django)
    signature = _signed(PAYLOAD)
    taken = [_through_wsgi(app, PAYLOAD, HTTP_STRIPE_SIGNATURE=signature, **extra) for extra in TAKEN[case]]
    taken_stored = _stored()
    _forget()

    # when the same are delivered to the view alone
    alone = [_to_view_alone(PAYLOAD, HTTP_STRIPE_SIGNATURE=signature, **extra) for extra in TAKEN[case]]

    # then Django never saw them, and the answers and the records are the view's
    assert django.calls == 0
    assert (taken, taken_stored) == (alone, _stored())
    assert taken[0][:2] == (200, b'{"received": true, "event": "evt_wsgi_1"}')


DEEP = "[" * 200 + "]" * 200
# body, other request variables, how it is signed (None: unsigned), the status Django answers.
HANDED_ON: dict[str, tuple[str, dict[str, str], dict[str, Any] | None, int]] = {
    "bad signature": (PAYLOAD, {}, {"secret": "whsec_other"}, 400),
    "from the future": (PAYLOAD, {}, {"offset": 600}, 400),
    "not an event": ("[]", {}, {}, 400),
    "unsigned": (PAYLOAD, {}, None, 400),
    "host not allowed": (PAYLOAD, {"HTTP_HOST": "evil.test"}, {}, 400),
    "a query string": (PAYLOAD, {"QUERY_STRING": "a=1"}, {}, 200),
    "another charset": (PAYLOAD, {"CONTENT_TYPE": "application/json; charset=latin-1"}, {}, 200),
    "a NUL in the body": ('{"a": "\x00"}', {}, {}, 400),
    "nested too deep": (DEEP, {}, {}, 400),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", HANDED_ON.keys())
def test_anything_else_reaches_django_untouched(case: str, stripe_standin: StandinServer) -> None:
    # given a request the WSGI layer does not take
    body, extra, signing, status = HANDED_ON[case]
    if signing is not None:
        extra = {**extra, "HTTP_STRIPE_SIGNATURE": _signed(body, **signing)}
    django = CountingDjango()
    handed_on = _through_wsgi(stripe_webhook_wsgi(django), body, **extra)
    handed_on_stored = _stored()
    _forget()

    # when the same is sent to the view alone
    alone = _to_view_alone(body, **extra)

    # then Django answered it, as the view alone does
    assert django.calls == 1
    assert (handed_on, handed_on_stored) == (alone, _stored())
    assert handed_on[0] == status


@pytest.mark.django_db(transaction=True)
def test_a_body_over_the_limit_is_refused_by_the_input_guard(settings: Any) -> None:
    settings.API_MAX_BODY_BYTES = 64
    django = CountingDjango()
    status, content, _ = _through_wsgi(
        stripe_webhook_wsgi(django), PAYLOAD, HTTP_STRIPE_SIGNATURE=_signed(PAYLOAD)
    )
    assert (django.calls, status, json.loads(content)["error"]["code"]) == (1, 413, "payload_too_large")
    assert _stored() == ([], [])


@pytest.mark.django_db(transaction=True)
def test_a_connection_that_died_is_replaced_by_django_and_the_delivery_taken(
    stripe_standin: StandinServer,
) -> None:
    # given this thread's connection, used once, then closed under Django's feet
    django = CountingDjango()
    app = stripe_webhook_wsgi(django)
    first = json.dumps(event("balance.available", {"object": "balance"}, id="evt_wsgi_first"))
    assert _through_wsgi(app, first, HTTP_STRIPE_SIGNATURE=_signed(first))[0] == 200
    path = f"/djstripe/webhook/{endpoint().djstripe_uuid}/"
    connection.connection.close()

    # when the next delivery arrives (no health check on this path)
    status, content, _ = _through_wsgi(app, PAYLOAD, path=path, HTTP_STRIPE_SIGNATURE=_signed(PAYLOAD))

    # then the statement failed, Django checked and replaced the connection and took it
    assert (status, django.calls) == (200, 1)
    assert json.loads(content) == {"received": True, "event": "evt_wsgi_1"}
    assert sorted(StripeEvent.objects.values_list("stripe_event_id", "deliveries")) == [
        ("evt_wsgi_1", 1),
        ("evt_wsgi_first", 1),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_delivery_taken_is_counted_as_the_view_would_be(stripe_standin: StandinServer) -> None:
    labels = {"status": "200", "view": "djstripe:djstripe_webhook_by_uuid", "method": "POST"}
    by_view = "django_http_responses_total_by_status_view_method_total"
    before = "django_http_requests_before_middlewares_total"
    counts = (REGISTRY.get_sample_value(by_view, labels) or 0, REGISTRY.get_sample_value(before) or 0)

    status, _, _ = _through_wsgi(
        stripe_webhook_wsgi(CountingDjango()), PAYLOAD, HTTP_STRIPE_SIGNATURE=_signed(PAYLOAD)
    )

    assert status == 200
    assert (REGISTRY.get_sample_value(by_view, labels), REGISTRY.get_sample_value(before)) == (
        counts[0] + 1,
        counts[1] + 1,
    )


@pytest.mark.django_db(transaction=True)
def test_a_connection_that_died_idle_is_replaced_for_a_delivery_django_takes(
    stripe_standin: StandinServer,
) -> None:
    # given the endpoint read and this thread's connection used, then closed under Django's feet
    django = CountingDjango()
    first = json.dumps(event("balance.available", {"object": "balance"}, id="evt_idle_first"))
    assert _through_wsgi(django, first, HTTP_STRIPE_SIGNATURE=_signed(first))[0] == 200
    from billing.stripe import wsgi as layer

    assert endpoint().djstripe_uuid in layer.endpoints  # the statement will be the request's first query
    path = f"/djstripe/webhook/{endpoint().djstripe_uuid}/"
    connection.connection.close()

    # when a delivery the layer hands on untried (a query string) goes to Django's fast path
    status, _, _ = _through_wsgi(
        stripe_webhook_wsgi(django),
        PAYLOAD,
        path=path,
        QUERY_STRING="via=proxy",
        HTTP_STRIPE_SIGNATURE=_signed(PAYLOAD),
    )

    # then the prepared statement's cursor ran Django's health check first: recorded, no 500
    assert status == 200
    assert StripeEvent.objects.filter(stripe_event_id="evt_wsgi_1").count() == 1
    connection.close()  # the test's own handler reconnects for its teardown


@pytest.mark.django_db(transaction=True)
def test_a_forged_delivery_does_not_empty_the_endpoint_cache(stripe_standin: StandinServer) -> None:
    # given the endpoint read once by a real delivery
    from billing.stripe import wsgi as layer

    app = stripe_webhook_wsgi(CountingDjango())
    assert _through_wsgi(app, PAYLOAD, HTTP_STRIPE_SIGNATURE=_signed(PAYLOAD))[0] == 200
    cached = dict(layer.endpoints)

    # when a delivery signed with another secret arrives
    forged = json.dumps(event("balance.available", {"object": "balance"}, id="evt_forged"))
    status, _, _ = _through_wsgi(app, forged, HTTP_STRIPE_SIGNATURE=_signed(forged, secret="whsec_forged"))

    # then the view refuses it and the endpoint stays cached as it was
    assert status == 400
    assert layer.endpoints == cached != {}


@pytest.mark.django_db(transaction=True)
def test_a_publish_failing_after_the_commit_does_not_record_the_delivery_twice(
    stripe_standin: StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a publisher that cannot queue (its thread cannot start), outside eager Celery
    from billing.stripe import publisher
    from payments_project.celery import app as celery_app

    def broken(stripe_event_pk: int) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)
    monkeypatch.setattr(publisher, "stripe_event_publish_soon", broken)

    # when a delivery arrives
    status, _, _ = _through_wsgi(
        stripe_webhook_wsgi(CountingDjango()), PAYLOAD, HTTP_STRIPE_SIGNATURE=_signed(PAYLOAD)
    )

    # then it is answered as recorded, once (the sweep will queue it)
    assert status == 200
    assert list(StripeEvent.objects.values_list("stripe_event_id", "status", "deliveries")) == [
        ("evt_wsgi_1", "pending", 1)
    ]
    assert WebhookEventTrigger.objects.count() == 1
