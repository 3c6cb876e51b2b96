"""scripts/dev_migrate.py: where `make run` keeps its migrated SQLite copy, and what names it."""

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "dev_migrate.py"


@pytest.fixture(scope="module")
def dev_migrate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dev_migrate", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cache_dir_defaults_to_the_user_cache_and_can_be_moved_or_turned_off(
    dev_migrate: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DEV_DB_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert dev_migrate.cache_dir() == tmp_path / "payments-backoffice"

    monkeypatch.setenv("DEV_DB_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert dev_migrate.cache_dir() == tmp_path / "elsewhere"

    monkeypatch.setenv("DEV_DB_CACHE_DIR", "off")
    assert dev_migrate.cache_dir() is None


def test_the_copy_is_named_by_the_migrations_and_the_settings_they_read(
    dev_migrate: ModuleType, settings: Any
) -> None:
    key = dev_migrate.migrations_key()
    assert key == dev_migrate.migrations_key()
    assert len(key) == 16

    settings.DJSTRIPE_FOREIGN_KEY_TO_FIELD = "djstripe_id"
    assert dev_migrate.migrations_key() != key
