"""The default dunning policy and the decline rules for Stripe's hard declines (see docs/dunning.md)."""

from django.db import migrations

NEVER, NOT_BEFORE = "never", "not_before"
# (decline_code, advice_code, network_advice_code, action, not_before_hours, note)
RULES = [
    ("stolen_card", "", "", NEVER, None, "Stolen card: retrying costs network fees and never succeeds."),
    ("lost_card", "", "", NEVER, None, "Lost card."),
    ("pickup_card", "", "", NEVER, None, "The issuer asks for the card back."),
    ("fraudulent", "", "", NEVER, None, "Suspected fraud."),
    ("restricted_card", "", "", NEVER, None, "The card cannot be used for this payment."),
    ("revocation_of_all_authorizations", "", "", NEVER, None, "The customer revoked every authorization."),
    ("revocation_of_authorization", "", "", NEVER, None, "The customer revoked this authorization."),
    ("stop_payment_order", "", "", NEVER, None, "Stop payment order."),
    ("security_violation", "", "", NEVER, None, "Security violation."),
    ("expired_card", "", "", NEVER, None, "The card expired: only a new card helps."),
    ("incorrect_number", "", "", NEVER, None, "Wrong card number."),
    ("invalid_account", "", "", NEVER, None, "The account is closed or invalid."),
    ("authentication_required", "", "", NEVER, None, "The customer must authenticate: ask them."),
    ("missing", "", "", NEVER, None, "No payment method on file."),
    ("", "do_not_try_again", "", NEVER, None, "Stripe's advice: do not try again."),
    ("", "confirm_card_data", "", NEVER, None, "Stripe's advice: the customer must confirm the card data."),
    ("", "try_again_later", "", NOT_BEFORE, 24, "Stripe's advice: try again later."),
    # Mastercard Merchant Advice Codes: 03 new account information, 21 payment cancelled.
    ("", "", "03", NEVER, None, "Mastercard MAC 03: new account information available."),
    ("", "", "21", NEVER, None, "Mastercard MAC 21: the cardholder cancelled this payment."),
    ("", "", "24", NOT_BEFORE, 1, "Mastercard MAC 24: retry after 1 hour."),
    ("", "", "25", NOT_BEFORE, 24, "Mastercard MAC 25: retry after 24 hours."),
    ("card_velocity_exceeded", "", "", NOT_BEFORE, 24, "Over the card's limit for now."),
    ("processing_error", "", "", NOT_BEFORE, 2, "An error at the issuer: wait a little."),
]


def seed(apps, schema_editor):
    DeclineRule = apps.get_model("subscriptions", "DeclineRule")
    DunningPolicy = apps.get_model("subscriptions", "DunningPolicy")
    for decline, advice, network, action, hours, note in RULES:
        DeclineRule.objects.get_or_create(
            decline_code=decline,
            advice_code=advice,
            network_advice_code=network,
            defaults={"action": action, "not_before_hours": hours, "note": note},
        )
    DunningPolicy.objects.get_or_create(
        is_default=True,
        defaults={
            "name": "Default",
            "retry_offsets_days": [1, 3, 5, 7],
            "past_due_access": "full",
            "suspend_after_failed_retries": 3,
            "cancel_after_days": 14,
            "invoice_end": "void",
        },
    )


def unseed(apps, schema_editor):
    apps.get_model("subscriptions", "DeclineRule").objects.filter(
        decline_code__in=[r[0] for r in RULES if r[0]]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("subscriptions", "0007_dunning")]
    operations = [migrations.RunPython(seed, unseed)]
