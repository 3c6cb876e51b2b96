from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    name = "subscriptions"
    verbose_name = "Subscriptions"

    def ready(self) -> None:
        from subscriptions import (
            signals,
            stripe_handlers,  # noqa: F401 - connects the Stripe event handlers
            tasks,  # noqa: F401 - registers the tasks that services queue by name
        )
        from subscriptions.dunning import receivers as dunning_receivers
        from subscriptions.dunning import tasks as dunning_tasks  # noqa: F401 - tasks queued by name

        signals.subscription_cancelled.connect(
            dunning_receivers.on_subscription_cancelled, dispatch_uid="dunning-stop-on-cancel"
        )
        signals.subscription_cancel_requested.connect(
            dunning_receivers.on_subscription_cancel_requested, dispatch_uid="dunning-stop-on-cancel-request"
        )
