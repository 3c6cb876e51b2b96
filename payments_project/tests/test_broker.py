"""The embedded broker of `make run` (payments_project/broker.py): a bad message file never stops
the consumer."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django.db import connection
from kombu import Connection

from entitlements.models import SnapshotInvalidation

ROOT = Path(__file__).resolve().parents[2]
TRANSPORT = "payments_project.broker:Transport"


def _options(folder: Path) -> dict[str, Any]:
    for name in ("out", "processed", "control"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(folder / "out"),
        "data_folder_out": str(folder / "out"),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
    }


def test_an_empty_or_damaged_file_is_set_aside_and_the_next_message_delivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given an empty message file and a damaged one ahead of a good message in the queue
    options = _options(tmp_path)
    (tmp_path / "out" / "00000000000000000000_empty.jobs.msg").write_bytes(b"")
    (tmp_path / "out" / "00000000000000000001_damaged.jobs.msg").write_bytes(b'{"body": ')
    with Connection("filesystem://", transport=TRANSPORT, transport_options=options) as conn:
        queue = conn.SimpleQueue("jobs")
        queue.put({"n": 1})

        # when the consumer reads the queue
        with caplog.at_level(logging.ERROR, logger="payments_project.broker"):
            message = queue.get(timeout=2)
        message.ack()
        queue.close()

    # then it got the good message; the two bad files are set aside and logged; nothing is left
    assert message.payload == {"n": 1}
    assert sorted(os.listdir(tmp_path / "bad")) == [
        "00000000000000000000_empty.jobs.msg",
        "00000000000000000001_damaged.jobs.msg",
    ]
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "broker message 00000000000000000000_empty.jobs.msg is not a message",
        "broker message 00000000000000000001_damaged.jobs.msg is not a message",
    ]
    assert [name for name in os.listdir(tmp_path / "out") if name.endswith(".msg")] == []


def test_a_message_is_only_ever_seen_whole(tmp_path: Path) -> None:
    # given a message being written: its bytes go to a name readers skip, then appear at once
    options = _options(tmp_path)
    with Connection("filesystem://", transport=TRANSPORT, transport_options=options) as conn:
        channel = conn.default_channel
        channel._put("jobs", {"body": "x" * 100_000})
        names = os.listdir(tmp_path / "out")

    # then the queue holds one complete message file and no temporary one
    assert len(names) == 1 and names[0].endswith(".jobs.msg") and not names[0].startswith(".")
    assert (tmp_path / "out" / names[0]).stat().st_size > 100_000


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_on_the_file_broker_survives_an_empty_message_file(tmp_path: Path) -> None:
    # given a real worker on the embedded file broker (as `make run` starts it) whose queue holds an
    # empty message file, and a snapshot drop waiting for the retry job
    SnapshotInvalidation.objects.create(user_id=1)
    db = connection.settings_dict
    env = {
        **os.environ,
        "VAR_DIR": str(tmp_path),
        "CELERY_BROKER_URL": "filesystem://",
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
    }
    out = tmp_path / "celery" / "out"
    out.mkdir(parents=True)
    (out / "0_empty.celery.msg").write_bytes(b"")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "payments_project",
            "worker",
            "--pool=solo",
            "--loglevel=WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # when a task is published behind it
        # Not the current app: later tests publish through the project's own (current_app).
        publisher = Celery("publisher", broker="filesystem://", set_as_current=False)
        publisher.conf.broker_transport = TRANSPORT
        publisher.conf.broker_transport_options = _options(tmp_path / "celery")
        publisher.send_task("entitlements.tasks.snapshot_invalidations_retry_task")

        # then the worker ran it (the drop was applied) and is still running
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and SnapshotInvalidation.objects.exists():
            time.sleep(0.2)
        assert not SnapshotInvalidation.objects.exists()
        assert worker.poll() is None
        assert os.listdir(tmp_path / "celery" / "bad") == ["0_empty.celery.msg"]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def test_messages_are_read_in_the_order_they_were_written(tmp_path: Path) -> None:
    # given twelve messages written one after another
    options = _options(tmp_path)
    with Connection("filesystem://", transport=TRANSPORT, transport_options=options) as conn:
        channel = conn.default_channel
        for n in range(12):
            channel._put("jobs", {"n": n})

        # when they are all read
        received = [channel._get("jobs")["n"] for _ in range(12)]

    # then they come back in the order of writing
    assert received == list(range(12))
