"""Reads of the accounts app."""

from __future__ import annotations

import functools
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import QuerySet
from django.db.models.options import Options

from payments_project.accounts.models import AuditLogEntry
from payments_project.db import prepared_cursor

ACT_FOR_ANY_USER_PERMISSION = "accounts.act_for_any_user"
# Viewing customers in the back-office (the support and finance roles) is also reading any
# user's data over the API.
READ_ANY_USER_PERMISSION = "accounts.view_customer"


def can_act_for_any_user(user: Any) -> bool:
    """Service accounts and superusers may name another user (`user_id`) in API calls, writes included."""
    return user_holds_any(user, (ACT_FOR_ANY_USER_PERMISSION,))


def can_read_any_user(user: Any) -> bool:
    """Who may name another user (`user_id`) in API reads: support and finance staff, service
    accounts and superusers. Writes for another user stay with `can_act_for_any_user`."""
    return user_holds_any(user, (READ_ANY_USER_PERMISSION, ACT_FOR_ANY_USER_PERMISSION))


def user_holds_any(user: Any, permissions: tuple[str, ...]) -> bool:
    """`any(user.has_perm(p) for p in permissions)`, in ONE prepared statement.

    has_perm loads every permission the user holds, in two ORM queries (their own, their
    groups'), on each request: an API token's user is a new object every time, and a service
    account's usage batch or event named for a customer paid for both (Django's own
    `ModelBackend.with_perm(...).filter(pk=...).exists()` is one query but compiles as much:
    1.1 ms of Python a call either way, against 0.1 ms here). The answer is the same:
    ModelBackend is the only configured backend that grants permissions (the axes one grants
    none), active superusers hold them all, inactive users none; a test holds the two equal.
    A user whose permissions are already loaded (the admin's) is answered from them."""
    if not (user and user.is_authenticated and user.is_active):
        return False
    if user.is_superuser or hasattr(user, "_perm_cache"):
        return any(user.has_perm(permission) for permission in permissions)
    with prepared_cursor() as cursor:
        pairs = [part for permission in permissions for part in permission.split(".", 1)]
        cursor.execute(_holds_sql(len(permissions)), [user.pk, *pairs] * 2)
        return bool(cursor.fetchone()[0])


@functools.cache
def _holds_sql(count: int) -> str:
    user_model = get_user_model()
    users_groups = user_model.groups.through._meta
    users_perms = user_model.user_permissions.through._meta
    groups_perms = Group.permissions.through._meta
    perm, ct = Permission._meta.db_table, ContentType._meta.db_table
    up_user, up_perm = _column(users_perms, "user"), _column(users_perms, "permission")
    ug_user, ug_group = _column(users_groups, "user"), _column(users_groups, "group")
    gp_group, gp_perm = _column(groups_perms, "group"), _column(groups_perms, "permission")
    wanted = f"(ct.app_label, p.codename) IN ({', '.join(['(%s, %s)'] * count)})"
    named = f"JOIN {ct} ct ON ct.id = p.content_type_id"
    return (
        f"SELECT EXISTS (SELECT 1 FROM {users_perms.db_table} x JOIN {perm} p ON p.id = x.{up_perm} "  # noqa: S608 - names from the models, values as parameters
        f"{named} WHERE x.{up_user} = %s AND {wanted}) "
        f"OR EXISTS (SELECT 1 FROM {users_groups.db_table} ug "
        f"JOIN {groups_perms.db_table} x ON x.{gp_group} = ug.{ug_group} JOIN {perm} p ON p.id = x.{gp_perm} "
        f"{named} WHERE ug.{ug_user} = %s AND {wanted})"
    )


def _column(meta: Options[Any], name: str) -> str:
    """The column of a many-to-many table's foreign key (a custom user model may name it otherwise)."""
    field = meta.get_field(name)
    assert isinstance(field, models.Field)
    return str(field.column)


def audit_entries_for(*, user_id: int) -> QuerySet[AuditLogEntry]:
    """Staff actions that concern one customer, newest first."""
    return AuditLogEntry.objects.filter(subject_user_id=user_id).select_related("actor")
