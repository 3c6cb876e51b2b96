"""Database ids read from text: URLs, admin forms, search boxes, our own metadata on Stripe objects."""

from __future__ import annotations

# A positive 64-bit integer (BigAutoField) has at most 19 digits; 18 always fit.
ID_MAX_DIGITS = 18


def int_id(text: object) -> int | None:
    """The id a text holds, or None. ASCII digits only: `str.isdigit` also accepts "²" and other
    Unicode digits that int() refuses (a 500), and a 30-digit number overflows the column."""
    value = str(text)
    if value.isascii() and value.isdigit() and 0 < len(value) <= ID_MAX_DIGITS and int(value) > 0:
        return int(value)
    return None
