"""Money is an integer count of minor units plus an ISO 4217 code; this module knows the exponents.

JPY has no minor unit (exponent 0), KWD has three (1 KWD = 1000 fils). Exponents come from CLDR via
Babel. Stripe's own list of zero-decimal currencies differs for a few codes (e.g. it treats HUF and
TWD specially for payouts); converting for Stripe calls is the gateway's job, not this module's.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from enum import StrEnum

from babel.numbers import format_currency, get_currency_precision, list_currencies

_KNOWN = frozenset(list_currencies())


class Rounding(StrEnum):
    EXACT = "exact"  # nearest minor unit
    WHOLE = "whole"  # up to a whole major unit: 12.30 USD -> 13.00, 1,125 JPY -> 1,125
    CHARM = "charm"  # up to the next price point, minus one step: 5.99 USD, 1,199 JPY, 1.990 KWD


# The currencies Stripe charges in (its "Supported currencies" page). ISO 4217 also lists codes no
# one pays in: XXX (no currency), XTS (testing), metals (XAU, XAG, XPT, XPD), fund codes (BOV,
# CLF, ...): a payment or a price in one of them is refused before Stripe is asked.
STRIPE_CURRENCIES = frozenset(
    """
    USD AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BWP BYN
    BZD CAD CDF CHF CLP CNY COP CRC CVE CZK DJF DKK DOP DZD EGP ETB EUR FJD FKP GBP GEL GIP GMD GNF
    GTQ GYD HKD HNL HTG HUF IDR ILS INR ISK JMD JOD JPY KES KGS KHR KMF KRW KWD KYD KZT LAK LBP LKR
    LRD LSL MAD MDL MGA MKD MMK MNT MOP MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN
    PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SEK SGD SHP SLE SOS SRD SZL THB TJS TND TOP
    TRY TTD TWD TZS UAH UGX UYU UZS VND VUV WST XAF XCD XOF XPF YER ZAR ZMW
    """.split()  # noqa: SIM905 - the table reads as Stripe's page lists it
)


def is_currency(code: str) -> bool:
    """A code we can show (any ISO 4217 code CLDR knows); what may be charged is is_stripe_currency."""
    return code in _KNOWN


def is_stripe_currency(code: str) -> bool:
    """A currency Stripe charges in: payments, prices and the catalog accept only these."""
    return code in STRIPE_CURRENCIES and code in _KNOWN


def currency_exponent(code: str) -> int:
    if code not in _KNOWN:
        raise ValueError(f"unknown ISO 4217 currency {code!r}")
    return int(get_currency_precision(code))


def to_major(amount_minor: int, currency: str) -> Decimal:
    return Decimal(amount_minor).scaleb(-currency_exponent(currency))


def format_money(amount_minor: int, currency: str, locale: str = "en_US") -> str:
    """Human text in the currency's own format: 899 EUR -> '€8.99', 14800 JPY -> '¥14,800',
    6000 KWD -> 'KWD 6.000' (a code used as the symbol is set apart from the number)."""
    text = str(format_currency(to_major(amount_minor, currency), currency, locale=locale))
    if text.startswith(currency) and text[len(currency) : len(currency) + 1].isdigit():
        text = f"{currency} {text[len(currency) :]}"
    return text


def major_text(amount_minor: int, currency: str) -> str:
    """The amount as staff type it: 799 EUR -> '7.99', 14800 JPY -> '14800', 6000 KWD -> '6.000'."""
    return format(to_major(amount_minor, currency), "f")


# Stripe's ceiling for one amount (eight digits of minor units); also bounds our columns' input.
MAX_AMOUNT_MINOR = 99_999_999
_TYPED_AMOUNT = re.compile(r"^\d+(\.\d+)?$")


class AmountError(ValueError):
    """A typed amount that cannot be taken as it is: `code` names why, the message says how to fix it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_major(text: str) -> Decimal:
    """Digits with an optional dot and decimals ('7.99', '14800', '6.000'), else AmountError.

    Commas are refused rather than guessed: '7,99' is a decimal comma in much of Europe and a
    thousands separator in English, and guessing wrong moves money by a factor of 100."""
    cleaned = text.strip().replace(" ", "").replace("\u00a0", "")
    if not _TYPED_AMOUNT.match(cleaned) or len(cleaned) > 32:
        raise AmountError("invalid", "Type digits, with a dot before any decimals, e.g. 7.99.")
    return Decimal(cleaned)


def to_minor(amount: Decimal, currency: str) -> int:
    """Major units to minor units, exactly: an amount finer than the currency's minor unit is an
    AmountError ('5.005' EUR, '100.5' JPY), never rounded. Trailing zeros are exact ('8.990')."""
    exponent = currency_exponent(currency)
    minor = amount.scaleb(exponent)
    if minor != minor.to_integral_value():
        places = {0: "no decimals", 1: "one decimal"}.get(exponent, f"{exponent} decimals")
        typed = -int(amount.as_tuple().exponent)
        raise AmountError(
            "too_many_decimals", f"{currency} has {places}; {amount} has {typed}. Nothing is rounded."
        )
    if minor > MAX_AMOUNT_MINOR:
        raise AmountError(
            "max_value",
            f"At most {format_money(MAX_AMOUNT_MINOR, currency)} (Stripe's limit for one amount).",
        )
    return int(minor)


def stripe_amount_problem(amount_minor: int, currency: str) -> str | None:
    """What Stripe would refuse in an amount it is asked to charge or refund, else None."""
    # Stripe charges three-decimal currencies (KWD, BHD, ...) in multiples of 10 minor units.
    if currency_exponent(currency) == 3 and amount_minor % 10:
        return f"{currency} amounts must end in 0 (Stripe charges them in steps of 0.010)."
    return None


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
