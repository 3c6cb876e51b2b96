"""Our reactions to Stripe events, registered here rather than on dj-stripe's signals.

dj-stripe's own receivers (its signals) refresh its mirror from Stripe: they call Stripe, so the
inbox runs them outside any transaction. Ours change our rows: the inbox runs them afterwards in one
short transaction, and they never call Stripe there. A handler that needs more of Stripe than the
mirror holds names a `fetch`, which the inbox runs outside the transaction, after dj-stripe's refresh,
and whose answer it hands to the handler.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from djstripe.models import Event
from djstripe.signals import WEBHOOK_SIGNALS

Fetch = Callable[[Event], Any]


@dataclass(frozen=True)
class StripeEventHandler:
    apply: Callable[..., None]  # (event) or, with a fetch, (event, fetched)
    fetch: Fetch | None = None

    def run(self, event: Event, fetched: Any) -> None:
        if self.fetch is None:
            self.apply(event)
        else:
            self.apply(event, fetched)


_HANDLERS: dict[str, list[StripeEventHandler]] = defaultdict(list)


def stripe_event_handler(
    types: str | Iterable[str], *, fetch: Fetch | None = None
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register the decorated function for these Stripe event types (names dj-stripe knows)."""
    names = [types] if isinstance(types, str) else list(types)
    unknown = [name for name in names if name not in WEBHOOK_SIGNALS]
    if unknown:
        raise RuntimeError(f"unknown Stripe event types: {unknown}")

    def register(func: Callable[..., None]) -> Callable[..., None]:
        for name in names:
            _HANDLERS[name].append(StripeEventHandler(apply=func, fetch=fetch))
        return func

    return register


def stripe_event_handlers(event_type: str) -> list[StripeEventHandler]:
    """The handlers of one event type, in registration order."""
    return list(_HANDLERS.get(event_type, ()))
