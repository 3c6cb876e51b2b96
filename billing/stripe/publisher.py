"""Queues just-received Stripe events for processing from a thread of the web process, in batches.

A Celery publish costs more CPU than the rest of a webhook's intake (about 0.6 to 0.9 ms on the
2-core bench machine, against the few tenths of a millisecond the intake itself takes): publishing
from the request, or once per few events, would cost more than the intake. Each request hands the
inbox row's id to this process's publisher thread and answers; the thread sends a lone event at
once, then at most one round of messages per PUBLISH_INTERVAL, each carrying the ids that arrived
meanwhile (BATCH_MAX at most) for the batch task (billing.stripe.tasks): under load the number of
publishes per second stays bounded whatever the intake rate, at the price of PUBLISH_INTERVAL of
delay for events arriving right after another. The rows are committed before their ids get here: a
message lost with the process (killed before it published) or with the broker leaves rows pending,
and the inbox's sweep (beat) queues them after STRIPE_EVENTS_STALE_PENDING_SECONDS, as for any
other lost message.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from typing import Any

from celery import current_app

logger = logging.getLogger(__name__)

# The batch processing task, named rather than imported (its module imports the services).
PROCESS_BATCH_TASK = "billing.stripe.tasks.stripe_events_process_batch_task"
# Ids per message at most: a message is processed by one worker, one event after the other, so a
# bigger batch would leave other workers idle while one works through it.
BATCH_MAX = 50
# Seconds between two rounds of publishing under load: at most ~1/PUBLISH_INTERVAL rounds per
# second per process (a few milliseconds of CPU), however many events arrive.
PUBLISH_INTERVAL = 0.05

_lock = threading.Lock()
_queue: queue.SimpleQueue[int] = queue.SimpleQueue()
_owner_pid = 0  # the process whose thread reads _queue (a forked child starts its own)


def stripe_event_publish_soon(stripe_event_pk: int) -> None:
    """Queue the processing of a committed inbox row from this process's publisher thread."""
    if _owner_pid != os.getpid():
        _start()
    _queue.put(stripe_event_pk)


def _start() -> None:
    global _owner_pid, _queue
    with _lock:
        if _owner_pid == os.getpid():
            return
        _queue = queue.SimpleQueue()  # a forked child's copy holds its parent's ids
        threading.Thread(target=_run, args=(_queue,), name="stripe-event-publisher", daemon=True).start()
        _owner_pid = os.getpid()


def _run(ids: queue.SimpleQueue[int]) -> None:
    while True:
        try:
            # One producer kept while publishing works: acquiring one per message from the pool
            # was about a third of a publish's CPU.
            with current_app.producer_or_acquire() as producer:
                while _publish_waiting(ids, producer=producer):
                    pass
        except Exception:
            logger.warning("Stripe event publisher: producer lost", exc_info=True)
            time.sleep(1)


def _publish_waiting(ids: queue.SimpleQueue[int], *, producer: Any) -> bool:
    """Waits for an id, publishes it with every id waiting (in messages of BATCH_MAX at most),
    then lets PUBLISH_INTERVAL pass so the next round carries what arrives meanwhile. False when
    a publish failed (a fresh producer, and connection, for the next round).

    A message short of BATCH_MAX ends the round: the queue was empty when it was taken, and what
    arrives while it is sent waits for the next round. Taking that too would, under steady load,
    publish a message of a few ids every millisecond or so instead of one per round: 4 times as
    many publishes at ~1,000 deliveries/s (bench/webhooks.py), the publisher then using about a
    fifth of the web process's CPU."""
    batch = _batch(ids, block=True)
    started = time.monotonic()
    while batch:
        if not _publish_batch(batch, producer=producer):
            return False
        if len(batch) < BATCH_MAX:
            break
        batch = _batch(ids, block=False)
    time.sleep(max(0.0, PUBLISH_INTERVAL - (time.monotonic() - started)))
    return True


def _batch(ids: queue.SimpleQueue[int], *, block: bool) -> list[int]:
    """The first id (waiting for it when `block`), then what else is there, up to BATCH_MAX."""
    batch: list[int] = []
    try:
        batch.append(ids.get(block=block))
        while len(batch) < BATCH_MAX:
            batch.append(ids.get_nowait())
    except queue.Empty:
        pass
    return batch


def _publish_batch(stripe_event_pks: list[int], *, producer: Any = None) -> bool:
    """One message for the batch task; False (logged, the sweep will queue them) if it failed."""
    if not stripe_event_pks:
        return True
    try:
        current_app.send_task(PROCESS_BATCH_TASK, args=(stripe_event_pks,), producer=producer)
    except Exception:
        logger.warning("could not queue Stripe events %s; the sweep will", stripe_event_pks, exc_info=True)
        return False
    return True


@atexit.register
def flush() -> None:
    """Publish what is still waiting (a worker stopping in order; tests)."""
    if _owner_pid != os.getpid():
        return
    while batch := _batch(_queue, block=False):
        _publish_batch(batch)
