from decimal import Decimal

import pytest

from billing.money import Rounding, apply_multiplier, currency_exponent, format_money, is_currency


@pytest.mark.parametrize(("code", "exponent"), [("USD", 2), ("EUR", 2), ("JPY", 0), ("KWD", 3)])
def test_currency_exponent_follows_iso_4217(code: str, exponent: int) -> None:
    assert currency_exponent(code) == exponent


def test_unknown_currency_is_refused() -> None:
    assert is_currency("XYZ") is False
    with pytest.raises(ValueError, match="unknown ISO 4217 currency 'XYZ'"):
        currency_exponent("XYZ")


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [(999, "USD", "$9.99"), (1500, "JPY", "¥1,500"), (3000, "KWD", "KWD3.000"), (0, "EUR", "€0.00")],
)
def test_format_money_uses_the_currency_exponent(amount: int, currency: str, text: str) -> None:
    assert format_money(amount, currency) == text


@pytest.mark.parametrize(
    ("amount", "currency", "multiplier", "rounding", "expected"),
    [
        # USD, two decimals
        (999, "USD", "0.6", Rounding.EXACT, 599),  # 599.4 -> 599
        (999, "USD", "0.6", Rounding.WHOLE, 600),  # $5.994 -> $6.00
        (999, "USD", "0.6", Rounding.CHARM, 599),  # -> $5.99
        (1000, "USD", "1", Rounding.CHARM, 999),  # already on the point -> $9.99
        # JPY, zero decimals: no fraction of a yen ever appears
        (1500, "JPY", "0.75", Rounding.EXACT, 1125),
        (1501, "JPY", "0.5", Rounding.EXACT, 751),  # 750.5 rounds half up
        (1500, "JPY", "0.75", Rounding.WHOLE, 1125),
        (1500, "JPY", "0.75", Rounding.CHARM, 1199),
        # KWD, three decimals (fils)
        (3000, "KWD", "0.9", Rounding.EXACT, 2700),
        (3000, "KWD", "0.9", Rounding.WHOLE, 3000),  # 2.700 KWD -> 3.000
        (3000, "KWD", "0.5", Rounding.CHARM, 1990),  # 1.500 -> 1.990
    ],
)
def test_apply_multiplier_rounds_in_minor_units(
    amount: int, currency: str, multiplier: str, rounding: Rounding, expected: int
) -> None:
    assert apply_multiplier(amount, currency, Decimal(multiplier), rounding) == expected
