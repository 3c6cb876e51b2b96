"""A small thread-safe circuit breaker that never holds its lock during a call.

Why our own rather than a library (README, "Stripe"): pybreaker, which the gateway used before,
holds one lock for the whole protected call, so every Stripe call of a process ran one at a time
behind a hung one (three customers paying at once got their 503 after 31, 63 and 94 s). The
maintained alternatives on PyPI did not fit either: `circuitbreaker` keeps its counters without
any lock and lets every call through once half-open; `aiobreaker` and `purgatory` are built
around asyncio. What the gateway needs is short: closed / open / half-open with ONE trial call,
consecutive outages counted (the caller says what an outage is), the time left open for a
Retry-After, and the calls in flight, so /health can say "degraded" while calls hang, before any
of them has failed.

States: closed (calls pass; `fail_max` outages in a row open it), open (calls are refused until
`reset_seconds` have passed), half-open (one trial call passes, the others are refused; its
success closes the breaker, an outage opens it again). The lock guards only the bookkeeping.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"


class BreakerOpen(Exception):
    """The call was refused without being made; `retry_after` seconds until a trial is allowed."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"circuit open, retry after {retry_after}s")
        self.retry_after = retry_after


class CircuitBreaker:
    def __init__(
        self,
        *,
        name: str,
        fail_max: int,
        reset_seconds: float,
        on_state_change: Callable[[str, str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.fail_max = fail_max
        self.reset_seconds = reset_seconds
        self._on_state_change = on_state_change
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial: int | None = None  # the ticket of the half-open trial in flight
        self._in_flight: dict[int, float] = {}  # ticket -> start
        self._tickets = itertools.count(1)

    # --- a call's life: enter() before, then exactly one of success() / outage() / answered() --

    def enter(self) -> int:
        """A ticket for one call, or BreakerOpen (nothing is recorded then)."""
        with self._lock:
            changed = self._refresh_locked()
            if self._state == OPEN or (self._state == HALF_OPEN and self._trial is not None):
                retry_after = self._retry_after_locked()
                ticket = 0
            else:
                ticket = next(self._tickets)
                self._in_flight[ticket] = self._clock()
                if self._state == HALF_OPEN:
                    self._trial = ticket
        self._announce(changed)
        if not ticket:
            raise BreakerOpen(retry_after)
        return ticket

    def success(self, ticket: int) -> None:
        """The call got an answer that says Stripe works (any answer that is not an outage)."""
        with self._lock:
            self._in_flight.pop(ticket, None)
            self._failures = 0
            changed = self._set_locked(CLOSED) if ticket == self._trial or self._state == HALF_OPEN else None
            if ticket == self._trial:
                self._trial = None
        self._announce(changed)

    # A refusal (declined card, invalid request) is Stripe answering: for the breaker, a success.
    answered = success

    def outage(self, ticket: int) -> None:
        """The call failed as an outage (network error, timeout, 5xx)."""
        with self._lock:
            self._in_flight.pop(ticket, None)
            self._failures += 1
            changed = None
            if ticket == self._trial or self._state == HALF_OPEN or self._failures >= self.fail_max:
                changed = self._set_locked(OPEN)
                self._opened_at = self._clock()
            if ticket == self._trial:
                self._trial = None
        self._announce(changed)

    def abandoned(self, ticket: int) -> None:
        """The call ended without telling anything about Stripe (e.g. a bug on our side)."""
        with self._lock:
            self._in_flight.pop(ticket, None)
            if ticket == self._trial:
                self._trial = None

    # --- reading -------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        with self._lock:
            changed = self._refresh_locked()
            state = self._state
        self._announce(changed)
        return state

    @property
    def fail_counter(self) -> int:
        return self._failures

    def slow_calls(self, *, older_than: float) -> int:
        """Calls in flight for more than `older_than` seconds."""
        now = self._clock()
        with self._lock:
            return sum(1 for start in self._in_flight.values() if now - start > older_than)

    def retry_after(self) -> int:
        with self._lock:
            return self._retry_after_locked()

    def close(self) -> None:
        """Back to closed with no failures and nothing in flight (tests, an operator's reset)."""
        with self._lock:
            changed = self._set_locked(CLOSED)
            self._failures = 0
            self._trial = None
            self._in_flight.clear()
        self._announce(changed)

    # --- internals (lock held) -------------------------------------------------------------------

    def _refresh_locked(self) -> tuple[str, str] | None:
        if self._state == OPEN and self._clock() - self._opened_at >= self.reset_seconds:
            return self._set_locked(HALF_OPEN)
        return None

    def _set_locked(self, state: str) -> tuple[str, str] | None:
        if state == self._state:
            return None
        old, self._state = self._state, state
        return old, state

    def _retry_after_locked(self) -> int:
        if self._state != OPEN:
            return 1  # half-open: a trial is in flight, its answer comes soon
        left = self.reset_seconds - (self._clock() - self._opened_at)
        return max(1, math.ceil(left))

    def _announce(self, changed: tuple[str, str] | None) -> None:
        if changed is not None and self._on_state_change is not None:
            self._on_state_change(self.name, *changed)
