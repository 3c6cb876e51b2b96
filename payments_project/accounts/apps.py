from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    name = "payments_project.accounts"
    label = "accounts"
    verbose_name = "Staff and audit"

    def ready(self) -> None:
        from payments_project import authentication  # noqa: F401 - token-cache invalidation signals
        from payments_project.accounts.roles import roles_ensure

        # Permissions are created per app during migrate: run after each, cheap and idempotent.
        post_migrate.connect(roles_ensure, dispatch_uid="payments_roles_ensure")
