from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    name = "subscriptions"
    verbose_name = "Subscriptions"

    def ready(self) -> None:
        from subscriptions import (
            stripe_handlers,  # noqa: F401 - connects the Stripe event handlers
            tasks,  # noqa: F401 - registers the tasks that services queue by name
        )
