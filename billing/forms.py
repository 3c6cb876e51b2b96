"""Money typed by staff in real units ('7.99', '14800', '6.000') and stored in minor units.

`MoneyField` reads the text; the currency often comes from elsewhere (another field of the row, the
zone above it, the payment being refunded), so the form converts once it knows it, with
`money_clean`: an amount finer than the currency's minor unit is a field error, never rounded.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.utils.html import format_html
from django.utils.safestring import SafeString

from billing.money import (
    AmountError,
    is_currency,
    major_text,
    parse_major,
    stripe_amount_problem,
    to_minor,
)


class MoneyInput(forms.TextInput):
    """A text box showing minor units as major ones, followed by the currency's code."""

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__({"inputmode": "decimal", "size": 10, "class": "bo-money", **(attrs or {})})
        self.currency: str | None = None

    def format_value(self, value: Any) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool):
            return major_text(value, self.currency) if self.currency and is_currency(self.currency) else None
        return super().format_value(value)

    def render(
        self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None
    ) -> SafeString:
        html = super().render(name, value, attrs, renderer)
        if not self.currency:
            return html
        return format_html('{} <span class="bo-currency">{}</span>', html, self.currency)


class MoneyField(forms.Field):
    """Cleans to a Decimal of major units; `money_clean` makes it minor units of its currency."""

    widget = MoneyInput
    default_error_messages = {"invalid": "Type digits, with a dot before any decimals, e.g. 7.99."}

    def __init__(self, *, currency: str | None = None, min_minor: int = 0, **kwargs: Any) -> None:
        kwargs.setdefault("help_text", "In real units of the currency, e.g. 7.99 EUR, 14800 JPY, 6.000 KWD.")
        super().__init__(**kwargs)
        self.min_minor = min_minor
        self.set_currency(currency)

    def set_currency(self, currency: str | None) -> None:
        self.currency = currency
        self.widget.currency = currency

    def to_python(self, value: Any) -> Decimal | None:
        if value in self.empty_values:
            return None
        if isinstance(value, int) and not isinstance(value, bool):  # an unchanged initial value
            return Decimal(major_text(value, self.currency)) if self.currency else Decimal(value)
        try:
            return parse_major(str(value))
        except AmountError as exc:
            raise forms.ValidationError(exc.message, code=exc.code) from exc

    def has_changed(self, initial: Any, data: Any) -> bool:
        """Compared in minor units: '8.99' typed over 899 is no change."""
        try:
            value = self.to_python(data)
        except forms.ValidationError:
            return True
        if value is None or initial is None:
            return (value is None) != (initial is None)
        if not self.currency or not is_currency(self.currency):
            return True
        try:
            return to_minor(value, self.currency) != initial
        except AmountError:
            return True


def money_clean(form: forms.BaseForm, name: str, currency: str | None) -> int | None:
    """Replace `form.cleaned_data[name]` (major units) by minor units of `currency`, or add the
    field's error: too many decimals, under the field's minimum, what Stripe would refuse."""
    amount = form.cleaned_data.get(name)
    if amount is None or not isinstance(amount, Decimal):
        return amount
    if not currency or not is_currency(currency):
        form.add_error(name, forms.ValidationError("Choose the currency first.", code="no_currency"))
        return None
    field = form.fields[name]
    try:
        minor = to_minor(amount, currency)
    except AmountError as exc:
        form.add_error(name, forms.ValidationError(exc.message, code=exc.code))
        return None
    minimum = getattr(field, "min_minor", 0)
    if minor < minimum:
        form.add_error(
            name,
            forms.ValidationError(f"At least {major_text(minimum, currency)} {currency}.", code="min_value"),
        )
        return None
    problem = stripe_amount_problem(minor, currency) if minor else None
    if problem:
        form.add_error(name, forms.ValidationError(problem, code="invalid_precision"))
        return None
    form.cleaned_data[name] = minor
    return minor
