from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from djstripe.models import WebhookEndpoint


def _run(**kwargs: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("stripe_webhook_endpoint", stdout=out, stderr=err, **kwargs)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_endpoint_row_is_created_once_and_its_path_printed_last(settings) -> None:  # type: ignore[no-untyped-def]
    # given a webhook secret
    settings.STRIPE_WEBHOOK_SECRET = "whsec_test_secret"

    # when the command runs twice
    first, _ = _run(base_url="https://pay.example.com")
    second, err = _run(base_url="https://pay.example.com")

    # then one row verifies that secret, and both runs print the same path as their last line
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.secret == "whsec_test_secret"
    assert endpoint.djstripe_validation_method == "verify_signature"
    assert endpoint.djstripe_tolerance == 300
    path = f"/djstripe/webhook/{endpoint.djstripe_uuid}/"
    assert first.splitlines()[-1] == second.splitlines()[-1] == path
    assert endpoint.url == "https://pay.example.com" + path
    assert f"point Stripe at https://pay.example.com{path}" in err


@pytest.mark.django_db
def test_a_secret_not_shaped_like_stripes_is_refused(settings) -> None:  # type: ignore[no-untyped-def]
    settings.STRIPE_WEBHOOK_SECRET = "not-a-secret"
    with pytest.raises(CommandError, match="STRIPE_WEBHOOK_SECRET must start with whsec_"):
        _run()
    assert WebhookEndpoint.objects.count() == 0
