"""Staff console: domain events (read-only, searchable) with an audited "publish again" action,
and the relays' heartbeats."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from payments_project.events.models import DomainEvent, RelayHeartbeat
from payments_project.events.selectors import event_envelope
from payments_project.events.services import events_publish_again

PUBLISH_AGAIN_PERMISSION = "events.publish_again"


class DeliveryFilter(admin.SimpleListFilter):
    title = "delivery"
    parameter_name = "delivery"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("published", "Published"), ("pending", "Not yet published"), ("failing", "Failed attempts")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[DomainEvent]) -> QuerySet[DomainEvent]:
        if self.value() == "published":
            return queryset.filter(published_at__isnull=False)
        if self.value() == "pending":
            return queryset.filter(published_at__isnull=True)
        if self.value() == "failing":
            return queryset.filter(published_at__isnull=True).exclude(last_error="")
        return queryset


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


_FIELDS = [
    "id",
    "type",
    "schema_version",
    "aggregate_type",
    "aggregate_id",
    "sequence",
    "occurred_at",
    "actor_type",
    "actor_id",
    "payload_pretty",
    "envelope_pretty",
    "delivery",
    "published_at",
    "claimed_by",
    "lease_until",
    "attempts",
    "publish_count",
    "last_error",
    "dedupe_key",
    "created_at",
]


@admin.register(DomainEvent)
class DomainEventAdmin(ReadOnlyAdmin):
    list_display = ["occurred_at", "type", "aggregate", "sequence", "actor", "delivery", "publish_count"]
    list_filter = [DeliveryFilter, "type", "aggregate_type", "actor_type"]
    # "=": exact, so an id or a Stripe id uses the index; a type may be searched by its prefix.
    search_fields = ["=id", "=aggregate_id", "type", "=actor_id"]
    date_hierarchy = "occurred_at"
    ordering = ["-id"]
    show_full_result_count = False  # the table grows large; counting it all is not worth a page
    actions = ["publish_again"]
    fields = tuple(_FIELDS)
    readonly_fields = tuple(_FIELDS)

    @admin.display(description="aggregate", ordering="aggregate_id")
    def aggregate(self, obj: DomainEvent) -> str:
        return f"{obj.aggregate_type}/{obj.aggregate_id}"

    @admin.display(description="actor", ordering="actor_type")
    def actor(self, obj: DomainEvent) -> str:
        return f"{obj.actor_type}:{obj.actor_id}" if obj.actor_id else obj.actor_type

    @admin.display(description="delivery")
    def delivery(self, obj: DomainEvent) -> str:
        if obj.published_at is not None:
            return f"published {obj.published_at:%Y-%m-%d %H:%M:%S} by {obj.claimed_by or '?'}"
        if obj.lease_until is not None and obj.lease_until > timezone.now():
            return f"publishing ({obj.claimed_by}, attempt {obj.attempts})"
        if obj.last_error:
            return f"waiting to retry after {obj.attempts} attempt(s): {obj.last_error[:120]}"
        return "waiting for the relay"

    @admin.display(description="payload")
    def payload_pretty(self, obj: DomainEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, sort_keys=True))

    @admin.display(description="CloudEvents envelope (as published)")
    def envelope_pretty(self, obj: DomainEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(event_envelope(obj), indent=2, default=str))

    def has_publish_again_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(PUBLISH_AGAIN_PERMISSION)

    @admin.action(description="Publish selected events again (audited)", permissions=["publish_again"])
    def publish_again(self, request: HttpRequest, queryset: QuerySet[DomainEvent]) -> None:
        count = events_publish_again(
            event_ids=list(queryset.values_list("pk", flat=True)),
            actor=request.user,
            reason="admin: publish again",
        )
        skipped = queryset.count() - count
        self.message_user(
            request,
            f"{count} event(s) queued for publication again"
            + (f"; {skipped} not yet published were left queued." if skipped else "."),
            messages.SUCCESS,
        )


@admin.register(RelayHeartbeat)
class RelayHeartbeatAdmin(ReadOnlyAdmin):
    list_display = ["relay_id", "state", "seen_at", "started_at", "published", "errors", "last_error"]
    list_filter = ["state"]
