"""Money is an integer count of minor units plus an ISO 4217 code; this module knows the exponents.

JPY has no minor unit (exponent 0), KWD has three (1 KWD = 1000 fils). Exponents come from CLDR via
Babel. Stripe's own list of zero-decimal currencies differs for a few codes (e.g. it treats HUF and
TWD specially for payouts); converting for Stripe calls is the gateway's job, not this module's.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from enum import StrEnum

from babel.numbers import format_currency, get_currency_precision, list_currencies

_KNOWN = frozenset(list_currencies())


class Rounding(StrEnum):
    EXACT = "exact"  # nearest minor unit
    WHOLE = "whole"  # up to a whole major unit: 12.30 USD -> 13.00, 1,125 JPY -> 1,125
    CHARM = "charm"  # up to the next price point, minus one step: 5.99 USD, 1,199 JPY, 1.990 KWD


def is_currency(code: str) -> bool:
    return code in _KNOWN


def currency_exponent(code: str) -> int:
    if code not in _KNOWN:
        raise ValueError(f"unknown ISO 4217 currency {code!r}")
    return int(get_currency_precision(code))


def to_major(amount_minor: int, currency: str) -> Decimal:
    return Decimal(amount_minor).scaleb(-currency_exponent(currency))


def format_money(amount_minor: int, currency: str, locale: str = "en_US") -> str:
    """Human text for the admin: 1500 JPY -> '¥1,500', 3000 KWD -> 'KWD3.000'."""
    return str(format_currency(to_major(amount_minor, currency), currency, locale=locale))


def apply_multiplier(amount_minor: int, currency: str, multiplier: Decimal, rounding: Rounding) -> int:
    """A zone's price from a base price in the same currency, in minor units."""
    exponent = currency_exponent(currency)
    raw = Decimal(amount_minor) * multiplier
    if rounding is Rounding.EXACT:
        return int(raw.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    whole = 10**exponent
    if rounding is Rounding.WHOLE:
        return int((raw / whole).to_integral_value(rounding=ROUND_CEILING)) * whole
    # CHARM: the price point is a whole unit (or 100 units when there is no minor unit), and the
    # step below it is one hundredth of a unit (or 1 unit): 5.99, 1.990, 1,199.
    point = whole if exponent >= 2 else 100
    step = 10 ** (exponent - 2) if exponent >= 2 else 1
    rounded = int((raw / point).to_integral_value(rounding=ROUND_CEILING)) * point
    return max(rounded - step, step)
