"""A redis-server of a test's own, which the test may pause, kill and start again.

    with RedisServer(tmp_path) as server:
        server.url            # redis://127.0.0.1:<port>/0
        server.pause()        # SIGSTOP: connections are accepted by the kernel, nothing answers
        server.resume()       # SIGCONT
        server.crash()        # SIGKILL
        server.start()        # again, on the same port, from the same append-only file

It listens on 127.0.0.1 on the first free port of 16380-16389 (the range the shared machine keeps
for such servers) and writes its append-only file (fsync on every write) in `directory`, so a
server killed and started again comes back with every write it acknowledged, as a production Redis
with persistence does after a crash.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

PORTS = range(16380, 16390)
START_TIMEOUT_SECONDS = 10.0


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        for port in [self.port] if self.port else PORTS:
            if not self.port and not _port_free(port):
                continue
            process = subprocess.Popen(  # noqa: S603 - our own binary and arguments
                [
                    binary,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--dir",
                    str(self.directory),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--save",
                    "",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if _answers(port, process):
                self.port, self._process = port, process
                return self
            process.kill()
            process.wait()
        raise RuntimeError(f"no redis-server could start on {self.port or list(PORTS)}")

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def crash(self) -> None:
        self._signal(signal.SIGKILL)
        assert self._process is not None
        self._process.wait()
        self._process = None

    def stop(self) -> None:
        if self._process is None:
            return
        self._signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def _signal(self, signum: int) -> None:
        if self._process is None:
            raise RuntimeError("the server is not running")
        os.kill(self._process.pid, signum)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _answers(port: int, process: subprocess.Popen[bytes]) -> bool:
    """Wait until the server answers PING (False if it exited: the port was taken meanwhile)."""
    client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if client.ping():
                    return True
            except redis.RedisError:
                time.sleep(0.02)
        return False
    finally:
        client.close()
