"""Run the Stripe stand-in inside tests: `with StandinServer() as standin: ... standin.url`.

Every StandinServer of a process shares one background event loop: aiohttp binds an app to the
first loop that serves it, and the stand-in's state (localstripe's store) is process-wide anyway.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

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

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
