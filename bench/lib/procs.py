"""What the bench scripts share: free loopback ports, their own database, and processes started
in sessions of their own (a server's workers, a Celery worker's children) and stopped as a group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_create(url: str) -> None:
    """Create the database `url` names unless it exists (the bench's own, never the project's)."""
    import psycopg

    server, _, name = url.rpartition("/")
    server = server.replace("postgres://", "postgresql://", 1)
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def migrate(env: dict[str, str], *, timeout: float) -> None:
    """`manage.py migrate` in a process of its own, with the bench's environment."""
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "-v0"],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
        timeout=timeout,
    )


def start(command: list[str], *, env: dict[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """A process of the bench in a session of its own; its output to `log` (shown if the bench
    fails), or to nobody (a server's access lines would cost the load generator's CPU)."""
    output = log.open("wb") if log is not None else None
    try:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=output or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if output else subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        if output is not None:
            output.close()


def stop(process: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> None:
    """Stop the process's whole group; SIGKILL after 40 s."""
    if process.poll() is None:
        os.killpg(process.pid, signum)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_http(url: str, seconds: float = 60, *, ok_only: bool = False) -> None:
    """Until `url` answers (with 200 if `ok_only`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200 or not ok_only:
                    return
        except urllib.error.HTTPError:
            if not ok_only:
                return  # it answers
            time.sleep(0.2)
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def server_start(port: int, *, env: dict[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """The Dockerfile's command (the production server) on loopback, once /health/live says 200."""
    process = start(
        [PYTHON, "-m", "payments_project.serve"],
        env={**env, "WEB_HOST": "127.0.0.1", "PORT": str(port)},
        log=log,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health/live", 60, ok_only=True)
    except RuntimeError:
        stop(process)
        raise RuntimeError("the server did not come up") from None
    return process
