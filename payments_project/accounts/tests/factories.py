from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from payments_project.accounts.models import AuditLogEntry


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("correct-horse-battery")


class AuditLogEntryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AuditLogEntry

    actor = factory.SubFactory(UserFactory)
    action = "note"
    target_type = "auth.user"
    target_id = factory.LazyAttribute(lambda e: str(e.actor.pk))
