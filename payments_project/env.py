"""Typed readers for environment variables: one place that says how a value is parsed."""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured
from django.views.decorators.debug import sensitive_variables

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@sensitive_variables()  # the settings read secrets with it
def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_map(name: str, default: dict[str, str] | None = None) -> dict[str, str]:
    """`a=1/s,b=2/m` → {"a": "1/s", "b": "2/m"}; entries override the defaults one by one."""
    result = dict(default or {})
    for item in env_list(name):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ImproperlyConfigured(f"{name} entries must look like key=value, got {item!r}")
        result[key.strip()] = value.strip()
    return result
