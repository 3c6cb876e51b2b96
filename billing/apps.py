from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing and catalog"

    def ready(self) -> None:
        from billing import tasks  # noqa: F401 - registers the tasks that services queue by name
        from billing.payments import stripe_handlers  # noqa: F401 - connects the handlers
        from billing.stripe import gateway as stripe_gateway

        stripe_gateway.configure_sdk_globals()
