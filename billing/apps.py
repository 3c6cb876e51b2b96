from django.apps import AppConfig
from django.db.models.signals import post_migrate


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing and catalog"

    def ready(self) -> None:
        from billing import stripe_gateway, webhook_handlers  # noqa: F401 - connects the handlers
        from payments_project import authentication  # noqa: F401 - token-cache invalidation signals
        from payments_project.roles import roles_ensure

        stripe_gateway.configure_sdk_globals()
        # Permissions are created per app during migrate: run after each, cheap and idempotent.
        post_migrate.connect(roles_ensure, dispatch_uid="payments_roles_ensure")
