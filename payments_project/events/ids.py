"""UUIDv7 (RFC 9562): a 48-bit Unix millisecond timestamp, then a 12-bit counter, then random bits.

Time-ordered, so the primary key index grows at its end and `?after=<id>` is a time cursor. Within
one process the ids are strictly increasing (method 1 of RFC 9562 §6.2: a counter seeded at random
each millisecond, carrying into the timestamp on overflow); across processes they order by clock.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from datetime import UTC, datetime

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_COUNTER_MAX = 0xFFF


def uuid7() -> uuid.UUID:
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _counter = secrets.randbits(11)  # leave headroom below 0xFFF for the same millisecond
        else:
            _counter += 1
            if _counter > _COUNTER_MAX:
                _last_ms += 1
                _counter = secrets.randbits(11)
        ms, counter = _last_ms, _counter
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | secrets.randbits(62)
    return uuid.UUID(int=value)


def uuid7_floor(moment: datetime) -> uuid.UUID:
    """The smallest UUIDv7 of the millisecond `moment`: every id made at or after it is larger."""
    ms = int(moment.timestamp() * 1000)
    return uuid.UUID(int=(ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | 0b10 << 62)


def uuid7_time(value: uuid.UUID) -> datetime:
    return datetime.fromtimestamp((value.int >> 80) / 1000, tz=UTC)
