"""Errors the services raise; the API turns each into `{"error": {"code", "message", "fields"}}`."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refusal the caller can act on: a stable machine code, an HTTP status, a human message."""

    status_code = 400
    code = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        fields: dict[str, list[dict[str, str]]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.fields = fields or {}
        self.headers = headers or {}
        # More machine-readable facts beside code/message/fields, e.g. a card's decline_code.
        self.extra = extra or {}


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class ServiceUnavailable(DomainError):
    status_code = 503
    code = "service_unavailable"


def constraint_name(exc: BaseException) -> str:
    """The name of the database constraint an IntegrityError broke ("" when it cannot be told): the
    services turn a known constraint into the caller's error instead of checking first.

    PostgreSQL names it; SQLite (the `make run` default) names a CHECK constraint but reports a
    UNIQUE one by its columns ("UNIQUE constraint failed: table.a, table.b"), which are matched
    against the models' unique constraints.
    """
    diag = getattr(exc.__cause__, "diag", None)
    name = str(getattr(diag, "constraint_name", "") or "")
    if name:
        return name
    message = str(exc)
    if message.startswith("CHECK constraint failed: "):
        return message.removeprefix("CHECK constraint failed: ").strip()
    if message.startswith("UNIQUE constraint failed: "):
        return _unique_constraint_named_by_columns(message.removeprefix("UNIQUE constraint failed: "))
    return ""


def _unique_constraint_named_by_columns(columns_text: str) -> str:
    from django.apps import apps
    from django.db import models

    qualified = [column.strip() for column in columns_text.split(",")]
    tables = {column.split(".", 1)[0] for column in qualified}
    columns = {column.split(".", 1)[-1] for column in qualified}
    for model in apps.get_models():
        if model._meta.db_table not in tables:
            continue
        for constraint in model._meta.constraints:
            if isinstance(constraint, models.UniqueConstraint) and constraint.fields:
                wanted = {
                    getattr(model._meta.get_field(field), "column", None) for field in constraint.fields
                }
                if wanted == columns:
                    return str(constraint.name)
    return ""
