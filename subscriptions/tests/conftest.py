from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from subscriptions import signals

SIGNALS = {
    "activated": signals.subscription_activated,
    "renewed": signals.subscription_renewed,
    "suspended": signals.subscription_suspended,
    "reactivated": signals.subscription_reactivated,
    "cancelled": signals.subscription_cancelled,
    "plan_changed": signals.subscription_plan_changed,
}


class SignalLog(list[tuple[str, Any]]):
    """(name, kwargs) of every domain signal sent, in order."""

    def names(self) -> list[str]:
        return [name for name, _ in self]


@pytest.fixture
def sent() -> Iterator[SignalLog]:
    log = SignalLog()
    receivers = {}
    for name, signal in SIGNALS.items():

        def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
            log.append((_name, kwargs))

        receivers[name] = receiver
        signal.connect(receiver, dispatch_uid=f"subscriptions-test-{name}")
    yield log
    for name, signal in SIGNALS.items():
        signal.disconnect(dispatch_uid=f"subscriptions-test-{name}")
