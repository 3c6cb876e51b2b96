"""`make run`'s migrate: on an empty SQLite database, start from a copy migrated earlier.

Migrating an empty database costs about 70 s of CPU on a 2-core machine, nearly all of it dj-stripe's
0002 migration: 514 RemoveField operations, after each of which Django re-renders the ~58 dj-stripe
models related to the changed one (its in-memory migration state, not SQL: SQLite's own work is
about 5 s, and the same migrations take as long on PostgreSQL). What they produce depends only on
the migration files, Django and SQLite, so after migrating an empty SQLite database this keeps a
copy in DEV_DB_CACHE_DIR (default ~/.cache/payments-backoffice; `off` keeps none) named by a hash
of those; the next empty database (`make clean-var`, another checkout) starts from that copy.
`migrate` runs in every case: it applies whatever the copy lacks and runs the post-migrate steps
(permissions, groups). Other databases (DATABASE_URL) are simply migrated.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import sys
from pathlib import Path

import django
from django.conf import settings
from django.core.management import call_command
from django.db import connections
from django.db.migrations.loader import MigrationLoader

ROOT = Path(__file__).resolve().parent.parent
KEEP_TEMPLATES = 5


def cache_dir() -> Path | None:
    from payments_project.env import env_str

    configured = env_str("DEV_DB_CACHE_DIR")
    if configured.strip().lower() == "off":
        return None
    if configured:
        return Path(configured)
    return Path(env_str("XDG_CACHE_HOME") or Path.home() / ".cache") / "payments-backoffice"


def migrations_key() -> str:
    """A hash of every migration file on disk, the settings migrations read, Django's and SQLite's
    versions."""
    read = [
        settings.AUTH_USER_MODEL,
        settings.DJSTRIPE_FOREIGN_KEY_TO_FIELD,
        getattr(settings, "DJSTRIPE_SUBSCRIBER_MODEL", ""),
    ]
    digest = hashlib.sha256(repr([django.__version__, sqlite3.sqlite_version, *read]).encode())
    loader = MigrationLoader(None, ignore_no_migrations=True)
    for key in sorted(loader.disk_migrations):
        source = sys.modules[loader.disk_migrations[key].__module__].__file__ or ""
        digest.update(f"{key[0]}.{key[1]}\0".encode())
        digest.update(Path(source).read_bytes())
    return digest.hexdigest()[:16]


def save_template(database: Path, template: Path) -> None:
    template.parent.mkdir(parents=True, exist_ok=True)
    partial = template.with_name(f"{template.name}.{os.getpid()}.tmp")
    partial.unlink(missing_ok=True)
    with sqlite3.connect(database) as source:
        source.execute("VACUUM INTO ?", (str(partial),))  # a consistent, self-contained copy
    partial.replace(template)
    for old in sorted(template.parent.glob("sqlite-*.sqlite3"), key=lambda p: p.stat().st_mtime)[
        :-KEEP_TEMPLATES
    ]:
        old.unlink(missing_ok=True)


def main() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "payments_project.settings")
    django.setup()
    database = settings.DATABASES["default"]
    where = cache_dir()
    if database["ENGINE"] != "django.db.backends.sqlite3" or where is None:
        call_command("migrate", interactive=False)
        return
    path = Path(database["NAME"])
    template = where / f"sqlite-{migrations_key()}.sqlite3"
    empty = not path.exists()
    if empty and template.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        shutil.copyfile(template, partial)
        partial.replace(path)
        print(f"Database: started from {template} (migrated earlier from the same migrations)")
    call_command("migrate", interactive=False)
    if empty and not template.exists():
        connections.close_all()
        save_template(path, template)
        print(f"Database: kept a migrated copy in {template} for the next empty database")


if __name__ == "__main__":
    main()
