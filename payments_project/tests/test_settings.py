"""Settings come from the environment: each case runs a fresh interpreter with its own env."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "APP_ENV": "production",
    "DJANGO_SECRET_KEY": "x" * 64 + "-a-long-random-production-secret",
    "DJANGO_ALLOWED_HOSTS": "pay.example.com,admin.example.com",
    "DATABASE_URL": "postgres://billing:pw@db.internal:5432/billing",
    "REDIS_URL": "redis://cache.internal:6379/2",
    "CELERY_BROKER_URL": "redis://cache.internal:6379/3",
    "STRIPE_SECRET_KEY": "sk_live_" + "a" * 24,
    "STRIPE_WEBHOOK_SECRET": "whsec_live",
}
READ = (
    "import json, django; from django.conf import settings as s; django.setup(); print(json.dumps({"
    "'debug': s.DEBUG, 'hosts': s.ALLOWED_HOSTS, 'db': s.DATABASES['default']['ENGINE'],"
    "'db_host': s.DATABASES['default']['HOST'], 'cache': s.CACHES['default']['BACKEND'],"
    "'broker': s.CELERY_BROKER_URL, 'standin': s.STRIPE_STANDIN, 'live': s.STRIPE_LIVE_MODE,"
    "'api_base': s.STRIPE_API_BASE, 'ssl_redirect': s.SECURE_SSL_REDIRECT,"
    "'rates': s.RATELIMIT_RATES, 'hsts': s.SECURE_HSTS_SECONDS}))"
)


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "STRIPE_", "APP_"))}
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "RATELIMIT_RATES"):
        clean.pop(name, None)
    clean["DJANGO_SETTINGS_MODULE"] = "payments_project.settings"
    return subprocess.run(
        [sys.executable, *args], env={**clean, **env}, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def _settings(env: dict[str, str]) -> dict[str, object]:
    result = _run(env, "-c", READ)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_no_environment_gives_the_embedded_development_defaults() -> None:
    values = _settings({})
    assert values == {
        "debug": True,
        "hosts": ["127.0.0.1", "localhost"],
        "db": "django.db.backends.sqlite3",
        "db_host": "",
        "cache": "django.core.cache.backends.locmem.LocMemCache",
        "broker": "filesystem://",
        "standin": True,
        "live": False,
        "api_base": "http://127.0.0.1:8420",
        "ssl_redirect": False,
        "rates": {
            "default": "600/m",
            "plans": "300/m",
            "payments": "60/m",
            "entitlements": "6000/m",
            "usage": "60000/m",
        },
        "hsts": 0,
    }


def test_production_environment_switches_every_part() -> None:
    values = _settings({**PRODUCTION, "RATELIMIT_RATES": "plans=10/s"})
    assert values == {
        "debug": False,
        "hosts": ["pay.example.com", "admin.example.com"],
        "db": "django.db.backends.postgresql",
        "db_host": "db.internal",
        "cache": "django_redis.cache.RedisCache",
        "broker": "redis://cache.internal:6379/3",
        "standin": False,
        "live": True,
        "api_base": "https://api.stripe.com",
        "ssl_redirect": True,
        "rates": {
            "default": "600/m",
            "plans": "10/s",
            "payments": "60/m",
            "entitlements": "6000/m",
            "usage": "60000/m",
        },
        "hsts": 31536000,
    }


def test_production_without_a_secret_key_refuses_to_start() -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != "DJANGO_SECRET_KEY"}
    result = _run(env, "-c", READ)
    assert result.returncode == 1
    assert "DJANGO_SECRET_KEY is required when APP_ENV=production" in result.stderr


def test_production_without_redis_or_a_broker_refuses_to_start() -> None:
    no_redis = _run({k: v for k, v in PRODUCTION.items() if k != "REDIS_URL"}, "-c", READ)
    no_broker = _run({k: v for k, v in PRODUCTION.items() if k != "CELERY_BROKER_URL"}, "-c", READ)
    assert "REDIS_URL is required when APP_ENV=production" in no_redis.stderr
    assert "CELERY_BROKER_URL (e.g. redis://...) is required when APP_ENV=production" in no_broker.stderr


def test_a_malformed_value_is_refused_with_its_name() -> None:
    result = _run({"DJANGO_DEBUG": "maybe"}, "-c", READ)
    assert result.returncode == 1
    assert "DJANGO_DEBUG must be a boolean" in result.stderr


def test_check_deploy_is_clean_with_production_variables() -> None:
    result = _run(PRODUCTION, "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "System check identified no issues" in result.stdout


def test_with_redis_the_snapshot_drops_redis_missed_are_retried_every_two_seconds() -> None:
    read = (
        "import json, django; from django.conf import settings as s; django.setup();"
        "print(json.dumps(s.CELERY_BEAT_SCHEDULE.get('entitlements-snapshot-invalidations-retry')))"
    )
    with_redis = _run(PRODUCTION, "-c", read)
    embedded = _run({}, "-c", read)
    assert json.loads(with_redis.stdout) == {
        "task": "entitlements.tasks.snapshot_invalidations_retry_task",
        "schedule": 2.0,
        "options": {"expire_seconds": 10},
    }
    assert json.loads(embedded.stdout) is None  # the local-memory cache holds no snapshots


def test_the_totp_issuer_is_the_default_when_unset_or_empty_and_the_value_when_set() -> None:
    read = "import django; from django.conf import settings as s; django.setup(); print(s.OTP_TOTP_ISSUER)"
    # given the variable unset, empty as .env.example leaves it, or set
    answers = [_run(env, "-c", read) for env in ({}, {"OTP_TOTP_ISSUER": ""}, {"OTP_TOTP_ISSUER": "Acme"})]
    # then the first two are the default and the third is the value
    assert [(a.returncode, a.stdout.strip()) for a in answers] == [
        (0, "Payments back-office"),
        (0, "Payments back-office"),
        (0, "Acme"),
    ]


def test_production_hashes_passwords_with_djangos_default_hashers() -> None:
    # when production settings are read in a fresh interpreter (the tests' MD5 hasher is conftest's)
    result = _run(
        PRODUCTION,
        "-c",
        "import json, django; from django.conf import settings as s, global_settings as g; django.setup();"
        " print(json.dumps([s.PASSWORD_HASHERS == g.PASSWORD_HASHERS, s.PASSWORD_HASHERS[0]]))",
    )

    # then they are Django's own list, PBKDF2 first
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [True, "django.contrib.auth.hashers.PBKDF2PasswordHasher"]


def test_redis_maintenance_notifications_are_off_unless_asked_for() -> None:
    read = (
        "import django; from django.conf import settings as s; django.setup();"
        " pool = s.CACHES['default']['OPTIONS']['CONNECTION_POOL_KWARGS'];"
        " config = pool.get('maint_notifications_config');"
        " print('default' if config is None else config.enabled)"
    )
    # given production without the variable, with it off, and with it on
    answers = [
        _run({**PRODUCTION, **extra}, "-c", read)
        for extra in ({}, {"REDIS_MAINT_NOTIFICATIONS": "0"}, {"REDIS_MAINT_NOTIFICATIONS": "1"})
    ]
    # then the pool's config says off, off, and none (redis-py's default: on over RESP3 only)
    assert [(a.returncode, a.stdout.strip()) for a in answers] == [(0, "False"), (0, "False"), (0, "default")]
