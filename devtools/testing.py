"""Run the Stripe stand-in inside tests: `with StandinServer() as standin: ... standin.url`.

Every StandinServer of a process shares one background event loop: aiohttp binds an app to the
first loop that serves it, and the stand-in's state (localstripe's store) is process-wide anyway.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeVar

import requests
from aiohttp import web

from devtools import stripe_standin

T = TypeVar("T")
_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _on_server_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on the stand-in's background loop and wait for its result."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="stripe-standin", daemon=True).start()
    return asyncio.run_coroutine_threadsafe(coroutine, _loop).result(timeout=10)


async def _clear_store() -> None:
    stripe_standin.ls.store.clear()


class StandinServer:
    """The stand-in on 127.0.0.1, on a free port, served from a background thread."""

    def __init__(self) -> None:
        self.url = ""
        self._runner: web.AppRunner | None = None

    def start(self) -> StandinServer:
        self._runner, self.url = _on_server_loop(stripe_standin.start("127.0.0.1", 0))
        return self

    def stop(self) -> None:
        if self._runner is not None:
            _on_server_loop(self._runner.cleanup())
            self._runner = None

    def reset(self) -> None:
        """Forget every object, as `DELETE /_config/data` does; registered webhooks stay."""
        # On the server's loop, so that no request sees a half-cleared store.
        _on_server_loop(_clear_store())

    def fail(self, path: str, *, status: int, times: int) -> None:
        """Answer the next `times` requests to `path` with `status` (the `POST /_dev/faults` hook of
        devtools.standin_clock), as a Stripe outage or refusal would."""
        response = requests.post(
            f"{self.url}/_dev/faults", json={"path": path, "status": status, "times": times}, timeout=5
        )
        response.raise_for_status()

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class Seen:
    method: str
    path: str
    idempotency_key: str | None
    replayed: str | None = None  # the stand-in's Idempotent-Replayed header; None when hung


class StripeProxy(ThreadingHTTPServer):
    """Forwards to the stand-in and records each request; while `hang` is set, writes are
    accepted and never answered (the connection stays open until `stop`); so are reads whose
    path starts with `hang_reads_under`, when set."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.seen: list[Seen] = []
        self.hang = threading.Event()
        self.hang_reads_under: str | None = None
        self.hung = threading.Semaphore(0)  # released once per write that is being held
        self._released = threading.Event()

    def writes(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method != "GET" and s.path == path]

    def stop(self) -> None:
        self._released.set()
        self.shutdown()
        self.server_close()


class _ProxyHandler(BaseHTTPRequestHandler):
    server: StripeProxy

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        seen = Seen(self.command, self.path, self.headers.get("Idempotency-Key"))
        self.server.seen.append(seen)
        if self._hangs():
            self.server.hung.release()
            self.server._released.wait(timeout=60)
            self.close_connection = True
            return
        drop = {"host", "content-length", "connection", "accept-encoding"}
        answer = requests.request(
            self.command,
            self.server.upstream + self.path,
            headers={k: v for k, v in self.headers.items() if k.lower() not in drop},
            data=body,
            timeout=10,
        )
        seen.replayed = answer.headers.get("Idempotent-Replayed", "false")
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def _hangs(self) -> bool:
        if self.command != "GET":
            return self.server.hang.is_set()
        prefix = self.server.hang_reads_under
        return prefix is not None and self.path.startswith(prefix)

    do_GET = do_POST = do_DELETE = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass
