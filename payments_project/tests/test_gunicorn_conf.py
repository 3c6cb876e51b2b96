"""The production server settings (payments_project/gunicorn_conf.py), as gunicorn reads them."""

from __future__ import annotations

import gc
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from payments_project import gunicorn_conf

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "payments_project" / "gunicorn_conf.py"


def test_gunicorn_accepts_the_config_and_the_app() -> None:
    # given the command the Dockerfile runs, with the production-like variables of the test env
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        "--check-config",
        "-c",
        "payments_project/gunicorn_conf.py",
        "payments_project.wsgi:application",
    ]

    # when gunicorn only checks it
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)

    # then
    assert done.returncode == 0, done.stderr


def test_a_worker_freezes_what_it_imported_after_loading_the_app() -> None:
    # given a collector with nothing frozen
    gc.unfreeze()
    try:
        # when a worker has loaded the app
        gunicorn_conf.post_worker_init(worker=None)

        # then every object alive at that point is out of the collector's generations
        assert gc.get_freeze_count() > 0
        assert gc.get_count()[2] == 0
    finally:
        gc.unfreeze()


def test_the_defaults_are_one_gthread_worker_per_core_with_keep_alive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given the variables unset, or empty as .env.example leaves them
    monkeypatch.delenv("GUNICORN_THREADS", raising=False)
    monkeypatch.setenv("WEB_CONCURRENCY", "")
    monkeypatch.setenv("GUNICORN_KEEPALIVE", " ")

    # when gunicorn reads the file
    conf = runpy.run_path(str(CONF))

    # then
    assert (conf["worker_class"], conf["workers"], conf["threads"], conf["keepalive"]) == (
        "gthread",
        gunicorn_conf.cores(),
        4,
        5,
    )
    assert (conf["reuse_port"], conf["accesslog"], conf["bind"]) == (True, "-", "0.0.0.0:8000")


def test_the_environment_overrides_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # given
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv("GUNICORN_THREADS", "8")
    monkeypatch.setenv("GUNICORN_REUSE_PORT", "false")
    monkeypatch.setenv("GUNICORN_ACCESSLOG", "off")

    # when
    conf = runpy.run_path(str(CONF))

    # then
    assert (conf["workers"], conf["threads"], conf["reuse_port"], conf["accesslog"]) == (3, 8, False, None)


def test_a_flag_that_is_not_a_boolean_stops_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    # given
    monkeypatch.setenv("GUNICORN_REUSE_PORT", "maybe")

    # when / then
    with pytest.raises(ValueError, match="GUNICORN_REUSE_PORT must be a boolean"):
        runpy.run_path(str(CONF))


def test_cores_honour_a_cgroup_cpu_quota(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # given a container limited to 1.5 CPUs on a host where the process may run on 8 cores
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    real_path = gunicorn_conf.Path
    monkeypatch.setattr(
        gunicorn_conf, "Path", lambda p: cpu_max if p == "/sys/fs/cgroup/cpu.max" else real_path(p)
    )

    # when / then: the quota rounded up
    assert gunicorn_conf.cores() == 2

    # and without a quota, the affinity
    cpu_max.write_text("max 100000\n")
    assert gunicorn_conf.cores() == 8
