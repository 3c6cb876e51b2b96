from django.apps import AppConfig


class BackofficeConfig(AppConfig):
    name = "payments_project.backoffice"
    label = "backoffice"
    verbose_name = "Back-office"
