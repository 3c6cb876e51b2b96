from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class EventsConfig(AppConfig):
    name = "payments_project.events"
    label = "events"
    verbose_name = "Domain events"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Each domain app declares its event types in `<app>/events.py`: importing them here makes
        # the catalog complete in every process (web, worker, relay, management commands).
        autodiscover_modules("events")

        from prometheus_client import REGISTRY

        from payments_project.events.metrics import OutboxCollector

        # /metrics reads the backlog at scrape time, in every process that serves it.
        REGISTRY.register(OutboxCollector())
