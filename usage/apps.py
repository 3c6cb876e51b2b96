from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "usage"
    verbose_name = "Usage and quotas"

    def ready(self) -> None:
        from entitlements import cache
        from usage import mirror

        # Entitlement snapshots carry the usage counters (read from PostgreSQL when built); the
        # entitlements app cannot import usage, so it is told here.
        cache.usage_provider["counters"] = mirror.counters_for_snapshot
