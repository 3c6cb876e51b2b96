"""Errors the services raise; the API turns each into `{"error": {"code", "message", "fields"}}`."""

from __future__ import annotations


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
        extra: dict[str, str] | None = None,
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
    """The name of the database constraint an IntegrityError broke ("" when the driver does not
    say): the services turn a known constraint into the caller's error instead of checking first."""
    diag = getattr(exc.__cause__, "diag", None)
    return str(getattr(diag, "constraint_name", "") or "")
