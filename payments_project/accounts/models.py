"""Who may do what across the project, and what staff did."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import User
from django.db import models


class Customer(User):
    """The project's view of a user account; it carries the project-wide API permission."""

    class Meta:
        proxy = True
        permissions = [
            # Held by the `service` group (other back-ends) and by superusers.
            ("act_for_any_user", "Can act on behalf of any user through the API"),
        ]


class AuditLogEntry(models.Model):
    """One staff action (API, admin or command): who, what, on which object, for which customer, why.

    Written by the services in the same transaction as the change; never edited or deleted.
    """

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64, help_text="app_label.model of the object acted on")
    target_id = models.CharField(max_length=64)
    subject_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="audit_entries",
        help_text="The customer the action concerns, when there is one.",
    )
    reason = models.CharField(max_length=1000, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"
        indexes = [
            models.Index(fields=["subject_user", "created_at"], name="audit_subject_created"),
            models.Index(fields=["target_type", "target_id"], name="audit_target"),
        ]

    def __str__(self) -> str:
        return f"{self.action} on {self.target_type}:{self.target_id}"
