from decimal import Decimal

import pytest
from django import forms

from billing.forms import MoneyField, money_clean
from billing.money import (
    AmountError,
    Rounding,
    apply_multiplier,
    currency_exponent,
    format_money,
    is_currency,
    major_text,
    parse_major,
    to_minor,
)


@pytest.mark.parametrize(("code", "exponent"), [("USD", 2), ("EUR", 2), ("JPY", 0), ("KWD", 3)])
def test_currency_exponent_follows_iso_4217(code: str, exponent: int) -> None:
    assert currency_exponent(code) == exponent


def test_unknown_currency_is_refused() -> None:
    assert is_currency("XYZ") is False
    with pytest.raises(ValueError, match="unknown ISO 4217 currency 'XYZ'"):
        currency_exponent("XYZ")


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (999, "USD", "$9.99"),
        (899, "EUR", "€8.99"),
        (14800, "JPY", "¥14,800"),
        (6000, "KWD", "KWD 6.000"),
        (0, "EUR", "€0.00"),
    ],
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


@pytest.mark.parametrize(
    ("typed", "currency", "minor"),
    [
        ("7.99", "EUR", 799),
        ("8.990", "EUR", 899),  # a trailing zero is exact, not rounded
        ("0", "EUR", 0),
        ("14800", "JPY", 14800),
        ("14800.0", "JPY", 14800),
        ("6.000", "KWD", 6000),
        ("6.5", "KWD", 6500),
        (" 12.30 ", "USD", 1230),
    ],
)
def test_typed_real_units_become_minor_units(typed: str, currency: str, minor: int) -> None:
    assert to_minor(parse_major(typed), currency) == minor


@pytest.mark.parametrize(
    ("typed", "currency", "message"),
    [
        ("5.005", "EUR", "EUR has 2 decimals; 5.005 has 3. Nothing is rounded."),
        ("100.5", "JPY", "JPY has no decimals; 100.5 has 1. Nothing is rounded."),
        ("6.0005", "KWD", "KWD has 3 decimals; 6.0005 has 4. Nothing is rounded."),
    ],
)
def test_more_decimals_than_the_currency_has_are_refused_not_rounded(
    typed: str, currency: str, message: str
) -> None:
    with pytest.raises(AmountError) as refused:
        to_minor(parse_major(typed), currency)
    assert (refused.value.code, refused.value.message) == ("too_many_decimals", message)


@pytest.mark.parametrize("typed", ["7,99", "14,800", "-1", "1e3", "€8.99", "", ".5", "8."])
def test_anything_but_digits_and_one_dot_is_refused(typed: str) -> None:
    with pytest.raises(AmountError) as refused:
        parse_major(typed)
    assert refused.value.code == "invalid"


def test_an_amount_above_stripes_ceiling_is_refused() -> None:
    with pytest.raises(AmountError) as refused:
        to_minor(parse_major("1000000"), "EUR")
    assert (refused.value.code, refused.value.message) == (
        "max_value",
        "At most €999,999.99 (Stripe's limit for one amount).",
    )


@pytest.mark.parametrize(
    ("minor", "currency", "text"), [(799, "EUR", "7.99"), (14800, "JPY", "14800"), (6000, "KWD", "6.000")]
)
def test_minor_units_are_shown_back_as_typed(minor: int, currency: str, text: str) -> None:
    assert major_text(minor, currency) == text


class _RefundLikeForm(forms.Form):
    amount = MoneyField(min_minor=1)

    def __init__(self, *args: object, currency: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.currency = currency
        self.fields["amount"].set_currency(currency)  # type: ignore[attr-defined]

    def clean(self) -> dict[str, object]:
        cleaned = super().clean() or {}
        money_clean(self, "amount", self.currency)
        return cleaned


@pytest.mark.parametrize(
    ("typed", "currency", "outcome"),
    [
        ("2.50", "EUR", 250),
        ("14800", "JPY", 14800),
        ("6.000", "KWD", 6000),
        ("5.005", "EUR", "EUR has 2 decimals; 5.005 has 3. Nothing is rounded."),
        ("100.5", "JPY", "JPY has no decimals; 100.5 has 1. Nothing is rounded."),
        ("6.0005", "KWD", "KWD has 3 decimals; 6.0005 has 4. Nothing is rounded."),
        ("6.005", "KWD", "KWD amounts must end in 0 (Stripe charges them in steps of 0.010)."),
        ("0.00", "EUR", "At least 0.01 EUR."),
        ("7,99", "EUR", "Type digits, with a dot before any decimals, e.g. 7.99."),
    ],
)
def test_the_money_field_stores_minor_units_or_says_what_is_wrong(
    typed: str, currency: str, outcome: int | str
) -> None:
    form = _RefundLikeForm({"amount": typed}, currency=currency)
    if isinstance(outcome, int):
        assert form.is_valid(), form.errors
        assert form.cleaned_data["amount"] == outcome
    else:
        assert not form.is_valid()
        assert form.errors == {"amount": [outcome]}


def test_the_money_input_shows_minor_units_in_real_units_with_the_currency() -> None:
    form = _RefundLikeForm(initial={"amount": 6000}, currency="KWD")
    html = str(form["amount"])
    assert 'value="6.000"' in html
    assert '<span class="bo-currency">KWD</span>' in html
