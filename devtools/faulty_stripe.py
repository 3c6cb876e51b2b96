"""A TCP front for Stripe whose faults a test chooses: hang, answer a fixed response, or forward.

    with FaultyStripe() as stripe_front:      # listens on 127.0.0.1, a free port
        stripe_front.url                      # point STRIPE_API_BASE here
        stripe_front.hang()                   # accept connections, never answer (Stripe paused)
        stripe_front.respond(500, {...})      # every request gets this HTTP answer
        stripe_front.forward(standin_port)    # pass bytes both ways to a real stand-in

It counts the connections it accepted and how many are open at once (`peak_open`), so a test can
see that calls ran side by side without timing them.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from types import TracebackType
from typing import Any


class FaultyStripe:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._mode: tuple[str, Any] = ("hang", None)
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = []
        self.accepted = 0
        self.open = 0
        self.peak_open = 0
        self._thread = threading.Thread(target=self._accept_loop, name="faulty-stripe", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hang(self) -> None:
        self._mode = ("hang", None)

    def respond(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._mode = ("respond", (status, body, headers or {}))

    def forward(self, port: int) -> None:
        self._mode = ("forward", port)

    def start(self) -> FaultyStripe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _close(sock)
            self._sockets.clear()

    def __enter__(self) -> FaultyStripe:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- internals ------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self.open += 1
                self.peak_open = max(self.peak_open, self.open)
                self._sockets.append(conn)
            threading.Thread(target=self._serve, args=(conn, self._mode), daemon=True).start()

    def _serve(self, conn: socket.socket, mode: tuple[str, Any]) -> None:
        kind, arg = mode
        try:
            if kind == "hang":
                while not self._stopped.is_set() and conn.recv(65536):
                    pass  # read and drop everything, answer nothing, until the client gives up
            elif kind == "respond":
                self._respond(conn, *arg)
            else:
                self._forward(conn, int(arg))
        except OSError:
            pass
        finally:
            _close(conn)
            with self._lock:
                self.open -= 1
                if conn in self._sockets:
                    self._sockets.remove(conn)

    def _respond(self, conn: socket.socket, status: int, body: Any, headers: dict[str, str]) -> None:
        while True:
            request = _read_request(conn)
            if request is None:
                return
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(payload)}"]
            head += [
                f"{name}: {value}" for name, value in {"Content-Type": "application/json", **headers}.items()
            ]
            conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)

    def _forward(self, conn: socket.socket, port: int) -> None:
        upstream = socket.create_connection(("127.0.0.1", port))
        with self._lock:
            self._sockets.append(upstream)

        def pump(source: socket.socket, target: socket.socket) -> None:
            try:
                while chunk := source.recv(65536):
                    target.sendall(chunk)
            except OSError:
                pass
            finally:
                _close(target)

        back = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
        back.start()
        pump(conn, upstream)
        back.join()
        with self._lock:
            if upstream in self._sockets:
                self._sockets.remove(upstream)


def _read_request(conn: socket.socket) -> bytes | None:
    """One HTTP request (headers and a Content-Length body), or None when the client closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
