"""The webhook's fast path (billing.stripe.middleware): the view's answers and records, in one statement.

Each case is delivered twice, once through the full stack and once with the fast path removed
(the view alone, as before it existed): the answers (status, body, headers) and what is stored
must be the same.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import stripe
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from djstripe.models import WebhookEndpoint, WebhookEventTrigger

from billing.models import StripeEvent
from billing.stripe import publisher
from billing.stripe.tasks import stripe_event_process_task, stripe_events_process_batch_task
from billing.stripe.tests.events import SECRET, deliver, endpoint, event
from devtools.testing import StandinServer
from payments_project.celery import app as celery_app

FAST_PATH = "billing.stripe.middleware.StripeWebhookFastPathMiddleware"
ROOT = Path(__file__).resolve().parents[3]


def _signed(body: str, *, secret: str = SECRET, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={stripe.WebhookSignature._compute_signature(f'{t}.{body}', secret)}"


def _post(client: Client, body: str, signature: str | None, **extra: str) -> Any:
    if signature is not None:
        extra["HTTP_STRIPE_SIGNATURE"] = signature
    return client.post(
        f"/djstripe/webhook/{endpoint().djstripe_uuid}/", data=body, content_type="application/json", **extra
    )


PAYLOAD = json.dumps(event("balance.available", {"object": "balance", "available": []}, id="evt_fast_1"))
CASES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "good": [(PAYLOAD, {})],
    "duplicate": [(PAYLOAD, {}), (PAYLOAD, {})],
    "bad signature": [(PAYLOAD, {"secret": "whsec_someone_else"})],
    "too old": [(PAYLOAD, {"timestamp": -301})],
    "from the future": [(PAYLOAD, {"timestamp": 301})],
    "bad JSON": [('{"id": "evt_fast_1", "livemode": false', {})],
    "not an event": [("[]", {})],
    "unsigned": [(PAYLOAD, {"unsigned": True})],
    # dj-stripe stores the proxy header's first address: one that is none is replaced by the peer's.
    "bad forwarded address": [(PAYLOAD, {"forwarded_for": "not-an-address"})],
    "bad forwarded address, bad signature": [
        (PAYLOAD, {"forwarded_for": "not-an-address", "secret": "whsec_someone_else"})
    ],
    "forwarded address with a port": [(PAYLOAD, {"forwarded_for": "203.0.113.9:4711, 10.0.0.1"})],
    # signed but not shaped as Stripe's events are: refused at intake, not failed in the worker
    "created as text": [(json.dumps({**json.loads(PAYLOAD), "created": "yesterday"}), {})],
    "no data object": [(json.dumps({**json.loads(PAYLOAD), "data": None}), {})],
    "type longer than the inbox column": [(json.dumps({**json.loads(PAYLOAD), "type": "t" * 129}), {})],
    "api version longer than its column": [
        (json.dumps({**json.loads(PAYLOAD), "api_version": "v" * 65}), {})
    ],
}
BROKEN = (
    "created as text",
    "no data object",
    "type longer than the inbox column",
    "api version longer than its column",
)


def _run(client: Client, deliveries: list[tuple[str, dict[str, Any]]]) -> tuple[Any, ...]:
    """Every answer (status, body, headers but the request id) and what is stored afterwards."""
    answers = []
    for body, options in deliveries:
        if options.get("unsigned"):
            signature = None
        else:
            offset = options.get("timestamp")
            signature = _signed(
                body,
                secret=options.get("secret", SECRET),
                timestamp=None if offset is None else int(time.time()) + offset,
            )
        extra = {"HTTP_X_FORWARDED_FOR": options["forwarded_for"]} if "forwarded_for" in options else {}
        extra.update(options.get("headers", {}))
        response = _post(client, body, signature, **extra)
        headers = {name: value for name, value in response.headers.items() if name != "X-Request-ID"}
        answers.append((response.status_code, response.content, headers))
    triggers = [
        (
            row.valid,
            row.body,
            row.remote_ip,
            {name: value for name, value in row.headers.items() if name != "Stripe-Signature"},
            row.webhook_endpoint_id,
            row.stripe_trigger_account_id,
            row.djstripe_version,
            row.processed,
        )
        for row in WebhookEventTrigger.objects.order_by("pk")
    ]
    inbox = list(
        StripeEvent.objects.values_list("stripe_event_id", "type", "status", "deliveries", "livemode")
    )
    return answers, triggers, inbox


@pytest.mark.django_db
@pytest.mark.parametrize("case", CASES.keys())
def test_the_fast_path_answers_and_records_as_the_view_does(case: str, client: Client) -> None:
    # given a delivery (or two) answered through the whole stack
    with_fast_path = _run(client, CASES[case])
    WebhookEventTrigger.objects.all().delete()
    StripeEvent.objects.all().delete()

    # when the same is delivered to the view alone
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "MIDDLEWARE", [name for name in settings.MIDDLEWARE if name != FAST_PATH])
        view_only = _run(client, CASES[case])

    # then the answers and the records are the same
    assert with_fast_path == view_only


@pytest.mark.django_db
@pytest.mark.parametrize("case", BROKEN)
def test_a_signed_event_not_shaped_as_stripes_is_refused_and_kept_as_invalid(
    case: str, client: Client
) -> None:
    # when a delivery signed with the endpoint's secret carries a broken event
    answers, triggers, inbox = _run(client, CASES[case])
    # then it is refused as a bad signature would be, kept as an invalid delivery, never queued
    assert [(status, json.loads(body)["error"]["code"]) for status, body, _ in answers] == [
        (400, "invalid_webhook")
    ]
    assert [row[0] for row in triggers] == [False]
    assert inbox == []


@pytest.mark.django_db(transaction=True)
def test_a_database_refusal_is_answered_as_the_view_answers_it(client: Client) -> None:
    # given a good delivery with a header PostgreSQL refuses to store (jsonb holds no NUL)
    deliveries = [(PAYLOAD, {"headers": {"HTTP_X_TRACE": "a\x00b"}})]
    with_fast_path = _run(client, deliveries)

    # when the same is delivered to the view alone
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "MIDDLEWARE", [name for name in settings.MIDDLEWARE if name != FAST_PATH])
        view_only = _run(client, deliveries)

    # then both answer the same 400 and store nothing
    assert with_fast_path == view_only
    answers, triggers, inbox = with_fast_path
    assert [(status, json.loads(content)["error"]["code"]) for status, content, _ in answers] == [
        (400, "invalid_value")
    ]
    assert (triggers, inbox) == ([], [])


@pytest.mark.django_db
def test_the_good_cases_give_the_answers_and_rows_expected(client: Client) -> None:
    answers, triggers, inbox = _run(client, CASES["duplicate"])
    assert [(status, json.loads(content)) for status, content, _ in answers] == [
        (200, {"received": True, "event": "evt_fast_1"}),
        (200, {"received": True, "event": "evt_fast_1"}),
    ]
    assert [(valid, remote_ip) for valid, _, remote_ip, *_ in triggers] == [(True, "127.0.0.1")] * 2
    assert inbox == [("evt_fast_1", "balance.available", "pending", 2, False)]
    row = StripeEvent.objects.get()
    assert row.trigger_id == WebhookEventTrigger.objects.order_by("pk").first().pk  # type: ignore[union-attr]
    assert row.trigger.webhook_endpoint == endpoint()  # type: ignore[union-attr]
    assert row.trigger.headers["Stripe-Signature"].startswith("t=")  # type: ignore[union-attr]


@pytest.mark.django_db
def test_a_delivery_to_a_known_endpoint_is_one_statement(client: Client) -> None:
    # given the endpoint already read by this process
    path = f"/djstripe/webhook/{endpoint().djstripe_uuid}/"
    deliver(client, event("balance.available", {"object": "balance"}))
    body = json.dumps(event("balance.available", {"object": "balance"}))
    signature = _signed(body)

    # when another event arrives
    with CaptureQueriesContext(connection) as queries:
        response = client.post(
            path, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature
        )

    # then it is recorded by one statement (endpoint check, delivery row, inbox row)
    assert response.status_code == 200
    assert [query["sql"].split()[0] for query in queries.captured_queries] == ["WITH"]
    assert StripeEvent.objects.count() == 2


@pytest.mark.django_db
def test_several_v1_signatures_one_of_them_right_are_accepted(client: Client) -> None:
    # given a header as Stripe sends it while a secret is rolled: a signature per secret
    body = json.dumps(event("balance.available", {"object": "balance"}))
    right = _signed(body)
    wrong = _signed(body, secret="whsec_the_other_one").split(",")[1]
    signature = f"{right.split(',')[0]},{wrong},{right.split(',')[1]},v0=ignored"

    # when it arrives, then it is taken
    assert _post(client, body, signature).status_code == 200
    assert StripeEvent.objects.count() == 1


@pytest.mark.django_db
def test_only_v0_signatures_are_refused(client: Client) -> None:
    body = json.dumps(event("balance.available", {"object": "balance"}))
    signature = _signed(body).replace("v1=", "v0=")
    response = _post(client, body, signature)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_webhook"
    assert list(WebhookEventTrigger.objects.values_list("valid", flat=True)) == [False]


@pytest.mark.django_db
def test_a_secret_changed_after_the_fast_path_read_it_is_honoured_at_once(client: Client) -> None:
    # given the endpoint's secret read by the fast path, then replaced
    assert deliver(client, event("balance.available", {"object": "balance"})).status_code == 200
    WebhookEndpoint.objects.filter(pk=endpoint().pk).update(secret="whsec_rotated")

    # when deliveries signed with the old and with the new secret arrive
    old = deliver(client, event("balance.available", {"object": "balance"}))
    new = deliver(client, event("balance.available", {"object": "balance"}), secret="whsec_rotated")

    # then the old secret is refused (recorded invalid), the new one taken
    assert (old.status_code, new.status_code) == (400, 200)
    assert old.json()["error"]["code"] == "invalid_webhook"
    assert list(WebhookEventTrigger.objects.order_by("pk").values_list("valid", flat=True)) == [
        True,
        False,
        True,
    ]
    assert StripeEvent.objects.count() == 2


@pytest.mark.django_db
def test_a_deleted_endpoint_is_404_even_when_the_fast_path_knew_it(client: Client) -> None:
    # given an endpoint the fast path has read, then deleted
    path = f"/djstripe/webhook/{endpoint().djstripe_uuid}/"
    assert deliver(client, event("balance.available", {"object": "balance"})).status_code == 200
    StripeEvent.objects.all().delete()
    WebhookEventTrigger.objects.all().delete()
    WebhookEndpoint.objects.all().delete()

    # when a delivery signed with its secret arrives
    body = json.dumps(event("balance.available", {"object": "balance"}))
    response = client.post(
        path, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=_signed(body)
    )

    # then it is the view's 404, and nothing is stored
    assert response.status_code == 404
    assert (WebhookEventTrigger.objects.count(), StripeEvent.objects.count()) == (0, 0)


def test_the_publisher_sends_what_waits_in_batches_of_at_most_batch_max() -> None:
    import queue

    ids: queue.SimpleQueue[int] = queue.SimpleQueue()
    for pk in range(1, publisher.BATCH_MAX + 11):
        ids.put(pk)
    first = publisher._batch(ids, block=False)
    second = publisher._batch(ids, block=False)
    assert first == list(range(1, publisher.BATCH_MAX + 1))
    assert second == list(range(publisher.BATCH_MAX + 1, publisher.BATCH_MAX + 11))
    assert publisher._batch(ids, block=False) == []


@pytest.mark.django_db
def test_the_batch_task_processes_each_row_and_retries_a_failed_one_alone(
    client: Client, stripe_standin: StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given two received events, the second one's delivery row deleted (its processing fails)
    deliver(client, event("issuing_card.shipped", {"id": "ic_1", "object": "issuing.card"}))
    deliver(client, event("issuing_card.shipped", {"id": "ic_2", "object": "issuing.card"}))
    good, broken = StripeEvent.objects.order_by("pk")
    StripeEvent.objects.filter(pk=broken.pk).update(trigger=None)
    retried: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(
        stripe_event_process_task, "apply_async", lambda args, **options: retried.append((args, options))
    )

    # when one batch message carries both, the broken one first
    stripe_events_process_batch_task(stripe_event_pks=[broken.pk, good.pk])

    # then the good one is done, the broken one failed and queued alone after the first back-off
    statuses = dict(StripeEvent.objects.values_list("pk", "status"))
    assert statuses == {good.pk: "done", broken.pk: "failed"}
    assert retried == [((broken.pk,), {"countdown": 10.0, "retries": 1})]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_events_taken_by_the_fast_path_are_processed_once_by_a_real_worker(
    stripe_standin: StandinServer,
) -> None:
    # given a worker on the Redis broker, using the test database, and the publisher not eager
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "STRIPE_API_BASE": stripe_standin.url,
    }
    celery_app.conf.task_always_eager = False
    celery_app.control.purge()
    command = [sys.executable, "-m", "celery", "-A", "payments_project", "worker", "--pool=solo"]
    command += ["--loglevel=WARNING", "--without-heartbeat", "--without-gossip", "--without-mingle"]
    worker = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        # when 30 events arrive in autocommit, one of them twice
        client = Client()
        payloads = [
            event("balance.available", {"object": "balance", "available": []}, id=f"evt_worker_{n}")
            for n in range(30)
        ]
        answers = [deliver(client, payload).status_code for payload in [*payloads, payloads[0]]]

        # then all are answered 200 and processed, each once
        assert answers == [200] * 31
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and StripeEvent.objects.exclude(status="done").exists():
            time.sleep(0.2)
        rows = StripeEvent.objects.order_by("stripe_event_id").values_list("status", "attempts", "deliveries")
        assert sorted(rows) == [("done", 1, 1)] * 29 + [("done", 1, 2)]
    finally:
        celery_app.conf.task_always_eager = True
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=15)


@pytest.mark.django_db
def test_the_recording_without_a_with_clause_gives_the_same_rows(
    django_capture_on_commit_callbacks: Any,
) -> None:
    # given the path SQLite (`make run`) takes, which has no INSERT in a WITH clause
    from billing.stripe.services import _delivery_accept_orm

    ep = endpoint()
    payload = event("balance.available", {"object": "balance"}, id="evt_orm_1")
    arguments = {
        "endpoint_uuid": ep.djstripe_uuid,
        "tolerance": ep.djstripe_tolerance,
        "event": payload,
        "body": json.dumps(payload),
        "headers": {"Stripe-Signature": "t=1,v1=x"},
        "remote_ip": "127.0.0.1",
    }

    # when the event is recorded twice, then once with a secret the endpoint no longer has
    with django_capture_on_commit_callbacks() as queued:
        first = _delivery_accept_orm(secret=SECRET, **arguments)
        second = _delivery_accept_orm(secret=SECRET, **arguments)
    stale = _delivery_accept_orm(secret="whsec_old", **arguments)

    # then one inbox row counting two deliveries, two valid delivery rows, one processing queued
    assert (first, second, stale) == (True, True, False)
    row = StripeEvent.objects.get()
    assert (row.stripe_event_id, row.status, row.deliveries) == ("evt_orm_1", "pending", 2)
    triggers = WebhookEventTrigger.objects.order_by("pk")
    assert [(t.valid, t.webhook_endpoint_id) for t in triggers] == [(True, ep.id), (True, ep.id)]
    assert row.trigger_id == triggers[0].pk
    assert len(queued) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("fast_path", [True, False])
def test_an_accepted_delivery_is_counted_under_the_view_name_either_way(
    client: Client, fast_path: bool
) -> None:
    from prometheus_client import REGISTRY

    # given the series dashboards read, by the view's URL name
    labels = {"status": "200", "view": "djstripe:djstripe_webhook_by_uuid", "method": "POST"}
    name = "django_http_responses_total_by_status_view_method_total"
    before = REGISTRY.get_sample_value(name, labels) or 0
    with pytest.MonkeyPatch.context() as patch:
        if not fast_path:
            patch.setattr(settings, "MIDDLEWARE", [m for m in settings.MIDDLEWARE if m != FAST_PATH])
        # when a delivery is accepted by the fast path, or by the view alone
        assert deliver(client, event("balance.available", {"object": "balance"})).status_code == 200

    # then it is counted once, under the same labels
    assert REGISTRY.get_sample_value(name, labels) == before + 1


@pytest.mark.django_db
def test_a_signature_header_with_an_odd_extra_timestamp_item_is_judged_as_stripe_judges_it(
    client: Client,
) -> None:
    # given a genuine delivery whose header gained an item " t=²" in front (a Unicode digit that
    # str.isdigit accepts and int refuses); Stripe reads the first item whose key is exactly "t"
    body = json.dumps(event("balance.available", {"object": "balance"}))
    signature = f" t=\u00b2,{_signed(body)}"

    # when it arrives, then it is taken as Stripe's check takes it, not a 500
    assert _post(client, body, signature).status_code == 200
    assert StripeEvent.objects.count() == 1


@pytest.mark.django_db
def test_an_endpoint_with_no_tolerance_still_refuses_an_old_delivery(client: Client) -> None:
    # given an endpoint whose tolerance is 0 (dj-stripe allows it; Stripe's check then skips the
    # age test, so a captured delivery would replay for ever)
    WebhookEndpoint.objects.filter(pk=endpoint().pk).update(djstripe_tolerance=0)
    body = json.dumps(event("balance.available", {"object": "balance"}))

    # when a delivery signed ten minutes ago arrives, then it is refused; a fresh one is taken
    old = _post(client, body, _signed(body, timestamp=int(time.time()) - 600))
    fresh = _post(client, body, _signed(body))
    assert (old.status_code, fresh.status_code) == (400, 200)


def test_the_publisher_sends_everything_waiting_then_lets_the_interval_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import queue

    # given more ids waiting than one message carries
    ids: queue.SimpleQueue[int] = queue.SimpleQueue()
    for pk in range(1, publisher.BATCH_MAX + 6):
        ids.put(pk)
    sent: list[list[int]] = []
    slept: list[float] = []

    def publish(batch: list[int], *, producer: object) -> bool:
        sent.append(batch)
        return True

    monkeypatch.setattr(publisher, "_publish_batch", publish)
    monkeypatch.setattr(publisher.time, "sleep", slept.append)

    # when the publisher thread takes one round
    assert publisher._publish_waiting(ids, producer=None) is True

    # then every waiting id went out, in messages of at most BATCH_MAX, before one pause
    assert sent == [
        list(range(1, publisher.BATCH_MAX + 1)),
        list(range(publisher.BATCH_MAX + 1, publisher.BATCH_MAX + 6)),
    ]
    assert len(slept) == 1
    assert 0 < slept[0] <= publisher.PUBLISH_INTERVAL


def test_ids_arriving_while_a_short_message_is_sent_wait_for_the_next_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import queue

    # given two ids waiting, and two more arriving while the first message is being sent
    ids: queue.SimpleQueue[int] = queue.SimpleQueue()
    ids.put(1)
    ids.put(2)
    sent: list[list[int]] = []
    slept: list[float] = []

    def publish(batch: list[int], *, producer: object) -> bool:
        sent.append(batch)
        if len(sent) == 1:
            ids.put(3)
            ids.put(4)
        return True

    monkeypatch.setattr(publisher, "_publish_batch", publish)
    monkeypatch.setattr(publisher.time, "sleep", slept.append)

    # when the publisher thread takes one round, then another
    assert publisher._publish_waiting(ids, producer=None) is True
    first_round = list(sent)
    assert publisher._publish_waiting(ids, producer=None) is True

    # then the first round sent only what waited when it began, with one pause after it; the
    # late ids went out in the second round
    assert first_round == [[1, 2]]
    assert sent == [[1, 2], [3, 4]]
    assert len(slept) == 2
