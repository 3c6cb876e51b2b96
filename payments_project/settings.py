"""Settings for the payments back-office, read from the environment (see .env.example).

APP_ENV picks the defaults: `development` (the default: SQLite under var/, local cache, a file broker
and the Stripe stand-in, so `make run` needs no service), `test` (what `make test` sets) or
`production` (every secret required, `check --deploy` clean). Each variable below overrides its default.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from redis.maint_notifications import MaintNotificationsConfig

from payments_project.env import env_bool, env_int, env_list, env_map, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))
VERSION = "0.1.0"

APP_ENV = env_str("APP_ENV", "development")
if APP_ENV not in {"development", "test", "production"}:
    raise ImproperlyConfigured(f"APP_ENV must be development, test or production, got {APP_ENV!r}")
PRODUCTION = APP_ENV == "production"

DEBUG = env_bool("DJANGO_DEBUG", default=APP_ENV == "development")
SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is required when APP_ENV=production")
    SECRET_KEY = "insecure-development-key-never-use-in-production-0123456789abcdef"  # noqa: S105 - dev only
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost"])
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS is required when APP_ENV=production")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "django_celery_beat",
    # Staff console: lockout after failed logins (axes) and TOTP two-factor login (django-otp).
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    # dj-stripe, headed "Stripe mirror" in the admin (billing.stripe.apps).
    "billing.stripe.apps.StripeMirrorConfig",
    "payments_project.accounts",
    "payments_project.events",
    "billing",
    "subscriptions",
    "entitlements",
    "usage",
    # The customer page and global search: reads every domain app, imported by none.
    "payments_project.backoffice",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "payments_project.observability.RequestIdMiddleware",
    # Body size, JSON nesting, 64-bit numbers and NUL refused for every URL (payments_project/security.py).
    "payments_project.security.InputGuardMiddleware",
    # /metrics, /status and /health for operators only in production (OPS_TOKEN, OPS_ALLOWED_NETWORKS).
    "payments_project.security.OpsAccessMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Answers warm token-authenticated requests of HOT_PATHS here; everything else goes on.
    "payments_project.hotpath.HotPathMiddleware",
    # Takes signed Stripe webhook deliveries that verify; everything else goes on to the view.
    "billing.stripe.middleware.StripeWebhookFastPathMiddleware",
    # One Stripe time budget per request (the hot path above never calls Stripe).
    "billing.stripe.gateway.StripeBudgetMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "payments_project.accounts.otp.AdminOTPRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last, as django-axes asks: answers a locked-out login attempt.
    "axes.middleware.AxesMiddleware",
]

# URL name -> the function that answers its warm token requests before the rest of the middleware
# (or returns None to let the request go on): payments_project.hotpath.
HOT_PATHS = {
    "entitlement-check": "entitlements.hotpath.check_fast",
    "entitlement-bulk-check": "entitlements.hotpath.bulk_check_fast",
    "usage-events": "usage.hotpath.event_fast",
}

ROOT_URLCONF = "payments_project.urls"
WSGI_APPLICATION = "payments_project.wsgi.application"
ASGI_APPLICATION = "payments_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
# SQLite is only the embedded default for `make run`; tests refuse it (see conftest.py).
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # web + worker + beat write concurrently: IMMEDIATE transactions avoid "database is locked".
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env_int("DATABASE_CONNECT_TIMEOUT", 3)
    if env_bool("DATABASE_PREPARED_STATEMENTS", default=True):
        # Statements run through payments_project.db.prepared_cursor() are prepared on their first
        # run in a connection, and planned once (a generic plan) rather than again on each run;
        # Django's own (client-binding) cursors never prepare, whatever these say. Off behind a
        # pooler that cannot keep prepared statements across transactions (PgBouncer in
        # transaction mode before 1.21 or without max_prepared_statements).
        DATABASES["default"]["OPTIONS"]["prepare_threshold"] = 0
        # Added to what DATABASE_URL's ?options= says (a statement_timeout, a search_path).
        given = DATABASES["default"]["OPTIONS"].get("options", "")
        DATABASES["default"]["OPTIONS"]["options"] = f"{given} -c plan_cache_mode=force_generic_plan".strip()
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (Redis when REDIS_URL is set) --------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if PRODUCTION and not REDIS_URL:
    # Rate limits, entitlement snapshots and token caching must be shared by every process.
    raise ImproperlyConfigured("REDIS_URL is required when APP_ENV=production")
REDIS_TIMEOUT_SECONDS = float(env_str("REDIS_TIMEOUT_SECONDS", "0.5"))
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "payments"),
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                # A dead Redis must cost milliseconds, not the default blocking connect.
                "SOCKET_CONNECT_TIMEOUT": REDIS_TIMEOUT_SECONDS,
                "SOCKET_TIMEOUT": REDIS_TIMEOUT_SECONDS,
                # redis-py 8 turns maintenance notifications (a Redis Cloud / Enterprise feature) on
                # by default, and while they are on its pool hands out a connection still holding an
                # unread reply (a command cut short by a signal or a time limit between its send and
                # its read), which would then answer the next command. Off, the pool checks for a
                # reply that has arrived and reconnects (one still in flight it cannot see); and a
                # new connection no longer spends a round trip asking a server without the feature.
                # REDIS_MAINT_NOTIFICATIONS=1 leaves redis-py's default (on over RESP3, off over
                # RESP2: a config given with ?protocol=2 in the URL would fail every command).
                "CONNECTION_POOL_KWARGS": (
                    {}
                    if env_bool("REDIS_MAINT_NOTIFICATIONS", default=False)
                    else {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}
                ),
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Staff login: lockout and two factors (docs/security.md) ------------------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out account or address
    "django.contrib.auth.backends.ModelBackend",
]
# AXES_FAILURE_LIMIT failed logins in a row lock the account, and separately the address, for
# AXES_COOLOFF_MINUTES (0: until a superuser deletes the attempt under *Access attempts*).
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
_axes_cooloff_minutes = env_int("AXES_COOLOFF_MINUTES", 60)
AXES_COOLOFF_TIME = timedelta(minutes=_axes_cooloff_minutes) if _axes_cooloff_minutes > 0 else None
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ADMIN = True
AXES_VERBOSE = False
# Behind a proxy, the client's address is REMOTE_ADDR only if the proxy rewrites it; otherwise
# every failure would count against the proxy's address (then rely on the per-account lockout).
AXES_IPWARE_META_PRECEDENCE_ORDER = ["REMOTE_ADDR"]
# A TOTP code at login for superusers and finance (payments_project/accounts/otp.py).
ADMIN_OTP_REQUIRED = env_bool("ADMIN_OTP_REQUIRED", default=PRODUCTION)
# Empty (as .env.example leaves it) is the default too: an authenticator app shows the issuer.
OTP_TOTP_ISSUER = env_str("OTP_TOTP_ISSUER").strip() or "Payments back-office"

# --- Auth, i18n, static -------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
# One date style in the console (payments_project/formats/en/formats.py).
FORMAT_MODULE_PATH = ["payments_project.formats"]
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# --- Security (production) ----------------------------------------------------------------------
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", default=PRODUCTION)
# Probes and scrapers talk plain HTTP inside the cluster.
SECURE_REDIRECT_EXEMPT = [r"^health", r"^metrics$", r"^status$"]
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
SECURE_HSTS_PRELOAD = PRODUCTION
if env_bool("DJANGO_BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Input limits (payments_project/security.py, docs/security.md) -------------------------------
# Every request body, the Stripe webhook's included (Stripe's events are well under 64 KiB).
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 1024 * 1024)
# Batch endpoints take more: 1,000 usage events with their metadata (up to 4 KiB each) need ~4.5 MB.
API_BATCH_PATHS = ("/api/v1/usage/batch/",)
API_MAX_BATCH_BODY_BYTES = env_int("API_MAX_BATCH_BODY_BYTES", 5 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(API_MAX_BODY_BYTES, API_MAX_BATCH_BODY_BYTES)
# JSON nesting: ours is at most 3 levels, Stripe's events about 8; Python's parser fails near 1,000.
API_MAX_JSON_DEPTH = env_int("API_MAX_JSON_DEPTH", 32)

# Debug pages and error reports hide Stripe's settings and any value holding a secret.
DEFAULT_EXCEPTION_REPORTER_FILTER = "payments_project.security.SecretsExceptionReporterFilter"

# --- Operations endpoints (docs/security.md) -------------------------------------------------------
# /metrics, /status and /health answer only a bearer OPS_TOKEN or a client in OPS_ALLOWED_NETWORKS
# (CIDRs, e.g. "10.0.0.0/8,127.0.0.1/32") when OPS_PROTECTED is on, the production default; with
# neither set they refuse everyone. /health/live and /health/ready always answer (probes).
OPS_PROTECTED = env_bool("OPS_PROTECTED", default=PRODUCTION)
OPS_TOKEN = env_str("OPS_TOKEN")
OPS_ALLOWED_NETWORKS = env_list("OPS_ALLOWED_NETWORKS")
for _network in OPS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError as _error:
        raise ImproperlyConfigured(f"OPS_ALLOWED_NETWORKS: {_error}") from None

# --- REST API -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "payments_project.authentication.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["payments_project.api.RatelimitThrottle"],
    "DEFAULT_PAGINATION_CLASS": "payments_project.api.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "payments_project.api.exception_handler",
    "DEFAULT_PARSER_CLASSES": [
        "payments_project.security.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Payments back-office API",
    "DESCRIPTION": "Plans, payments, subscriptions, entitlements and usage.",
    "VERSION": VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Swagger UI served from our own static files: the docs page works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Every operation's error answers (400/401/403/404/409/413/429/503) in the error format, and
    # a summary for each (payments_project/openapi.py). Several serializers have a `status`
    # choice field: each gets its own enum name.
    "ENUM_NAME_OVERRIDES": {
        "InvitationStatusEnum": "subscriptions.families.apis.INVITATION_STATUSES",
        "PaymentStatusEnum": "billing.payments.models.Payment.Status",
        "UsageEventStatusEnum": ["recorded", "duplicate", "refused"],
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "payments_project.openapi.error_responses_hook",
    ],
}

# Rate limits per API scope (a view's `ratelimit_scope`), django-ratelimit syntax, e.g.
# RATELIMIT_RATES="default=600/m,plans=120/m". Counted per user, or per IP when anonymous.
RATELIMIT_RATES = env_map(
    "RATELIMIT_RATES",
    {
        "default": "600/m",
        "plans": "300/m",
        "payments": "60/m",
        "entitlements": "6000/m",
        # Ingest: a service account records for many users under one budget.
        "usage": "60000/m",
    },
)
RATELIMIT_ENABLE = env_bool("RATELIMIT_ENABLE", default=True)
RATELIMIT_USE_CACHE = "default"
# With Redis down the API keeps answering (entitlement checks fall back to the database);
# losing abuse protection for the outage is the lesser harm than refusing every request.
RATELIMIT_FAIL_OPEN = True
# How long a token's cached user snapshot (payments_project.authentication) may live. Token
# deletion and user changes invalidate it at once; the TTL only bounds a lost invalidation.
AUTH_TOKEN_CACHE_TTL_SECONDS = env_int("AUTH_TOKEN_CACHE_TTL_SECONDS", 60)
# A user's cached entitlement snapshot. Invalidations Redis did not confirm are re-applied every
# ENTITLEMENTS_INVALIDATION_RETRY_SECONDS (a beat job); the TTL is only the last resort, for one
# Redis confirmed and then lost (failover to a lagging replica, restore from an old dump).
ENTITLEMENTS_SNAPSHOT_TTL_SECONDS = env_int("ENTITLEMENTS_SNAPSHOT_TTL_SECONDS", 600)
ENTITLEMENTS_INVALIDATION_RETRY_SECONDS = env_int("ENTITLEMENTS_INVALIDATION_RETRY_SECONDS", 2)
if ENTITLEMENTS_INVALIDATION_RETRY_SECONDS < 1:
    raise ImproperlyConfigured("ENTITLEMENTS_INVALIDATION_RETRY_SECONDS must be at least 1")
# A process's copy of the known feature codes (tells unknown_feature from not_in_plan).
ENTITLEMENTS_FEATURE_CODES_TTL_SECONDS = env_int("ENTITLEMENTS_FEATURE_CODES_TTL_SECONDS", 60)

# --- Celery -------------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if PRODUCTION and CELERY_BROKER_URL.startswith("filesystem://"):
    raise ImproperlyConfigured("CELERY_BROKER_URL (e.g. redis://...) is required when APP_ENV=production")
CELERY_BROKER_FOLDER = VAR_DIR / "celery"
if CELERY_BROKER_URL.startswith("filesystem://"):
    # Embedded broker: a folder on disk, no server. The folders must exist before a worker starts.
    # kombu's transport, hardened (payments_project/broker.py): messages appear whole, a bad file
    # is set aside in bad_folder instead of stopping the worker.
    CELERY_BROKER_TRANSPORT = "payments_project.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_FOLDER / "out"),
        "data_folder_out": str(CELERY_BROKER_FOLDER / "out"),
        "processed_folder": str(CELERY_BROKER_FOLDER / "processed"),
        "control_folder": str(CELERY_BROKER_FOLDER / "control"),
        "bad_folder": str(CELERY_BROKER_FOLDER / "bad"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {}
CELERY_BROKER_CONNECTION_TIMEOUT = 2.0
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Entries are copied into django-celery-beat's tables, where staff can pause or retime them.
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "billing-catalog-push": {"task": "billing.catalog.tasks.catalog_push", "schedule": 900.0},
    "billing-stripe-events-sweep": {
        "task": "billing.stripe.tasks.stripe_events_sweep_task",
        "schedule": 60.0,
    },
    "billing-refunds-resubmit": {"task": "billing.payments.tasks.refunds_resubmit_task", "schedule": 300.0},
    "billing-meter-reports-send": {
        "task": "billing.metering.tasks.meter_reports_send_task",
        "schedule": 60.0,
    },
    "subscriptions-stripe-calls-sweep": {
        "task": "subscriptions.tasks.stripe_calls_sweep_task",
        "schedule": 60.0,
    },
    "subscriptions-duplicates-settle": {
        "task": "subscriptions.tasks.subscription_duplicates_settle_sweep_task",
        "schedule": 300.0,
    },
    "subscriptions-dunning-sweep": {
        "task": "subscriptions.dunning.tasks.dunning_sweep_task",
        "schedule": 120.0,
    },
    "subscriptions-reconcile-overdue": {
        "task": "subscriptions.tasks.subscriptions_reconcile_overdue_task",
        "schedule": 600.0,
    },
}
# Metered billing (docs/metering.md): usage is reported to Stripe per closed window of this length,
# aligned on the Unix epoch in UTC (3600: one meter event per customer, meter and hour).
METERING_WINDOW_SECONDS = env_int("METERING_WINDOW_SECONDS", 3600)
if not 60 <= METERING_WINDOW_SECONDS <= 86400 or METERING_WINDOW_SECONDS % 60:
    raise ImproperlyConfigured("METERING_WINDOW_SECONDS must be whole minutes from 60 to 86400")
# Where `manage.py usage_reconcile` takes our totals from: a function (start=, end=) returning
# {(stripe_customer_id, event_name): total}. The usage ledger (windows closed by now); set it to
# "billing.metering.selectors.meter_reported_totals" to compare what was reported instead.
METERING_USAGE_TOTALS = "usage.selectors.usage_meter_totals_closed"
CELERY_BEAT_SCHEDULE["usage-meter-windows-report"] = {
    "task": "usage.tasks.usage_meter_windows_report_task",
    "schedule": 300.0,
}
CELERY_BEAT_SCHEDULE["usage-reservations-expire"] = {
    "task": "usage.tasks.usage_reservations_expire_task",
    "schedule": 60.0,
}
# Usage events (usage app): occurred_at may be this far in the future (clients' clocks drift) and
# this far before the open period's start (late deliveries of the previous period); older ones
# are refused with a reason. Unsettled reservations are released after their TTL by the job above.
USAGE_CLOCK_SKEW_SECONDS = env_int("USAGE_CLOCK_SKEW_SECONDS", 300)
USAGE_LATE_GRACE_SECONDS = env_int("USAGE_LATE_GRACE_SECONDS", 3600)
USAGE_RESERVATION_TTL_SECONDS = env_int("USAGE_RESERVATION_TTL_SECONDS", 900)
# Dunning emails (docs/dunning.md): the console under `make run`, your SMTP or provider in production.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "billing@localhost")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
# The frontend's page where a customer updates their card (linked from the "payment failed" email).
DUNNING_UPDATE_CARD_URL = env_str("DUNNING_UPDATE_CARD_URL", "http://127.0.0.1:8000/account/billing/card")
# A live subscription whose period ended this long ago with no Stripe event since is asked of
# Stripe by the job above (Stripe sends the renewal's events within minutes of the period end).
SUBSCRIPTIONS_RECONCILE_GRACE_SECONDS = env_int("SUBSCRIPTIONS_RECONCILE_GRACE_SECONDS", 3600)
if REDIS_URL:
    # Entitlement snapshots live only in Redis: re-apply the drops it missed while unreachable. A
    # run that no worker took in time expires rather than piling up behind an outage.
    CELERY_BEAT_SCHEDULE["entitlements-snapshot-invalidations-retry"] = {
        "task": "entitlements.tasks.snapshot_invalidations_retry_task",
        "schedule": float(ENTITLEMENTS_INVALIDATION_RETRY_SECONDS),
        "options": {"expire_seconds": ENTITLEMENTS_INVALIDATION_RETRY_SECONDS * 5},
    }

# The inbox's sweep (billing-stripe-events-sweep) queues again a row pending this long (never
# queued, broker down) or left "processing" this long (its worker died: no live worker holds one
# that long, as processing calls Stripe within STRIPE_REQUEST_BUDGET_SECONDS).
STRIPE_EVENTS_STALE_PENDING_SECONDS = env_int("STRIPE_EVENTS_STALE_PENDING_SECONDS", 120)
STRIPE_EVENTS_STALE_PROCESSING_SECONDS = env_int("STRIPE_EVENTS_STALE_PROCESSING_SECONDS", 600)

# --- Stripe (dj-stripe keeps the local mirror) --------------------------------------------------
# Without STRIPE_SECRET_KEY the project runs against the local stand-in (devtools/).
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY")
STRIPE_STANDIN = not STRIPE_SECRET_KEY
if STRIPE_STANDIN and PRODUCTION:
    raise ImproperlyConfigured("STRIPE_SECRET_KEY is required when APP_ENV=production")
STRIPE_STANDIN_PORT = env_int("STRIPE_STANDIN_PORT", 8420)
if STRIPE_STANDIN:
    # dj-stripe only accepts keys shaped like Stripe's; the stand-in accepts any.
    STRIPE_SECRET_KEY = "sk_test_standin0000000000000000000000"  # noqa: S105 - stand-in only
STRIPE_API_BASE = env_str(
    "STRIPE_API_BASE",
    f"http://127.0.0.1:{STRIPE_STANDIN_PORT}" if STRIPE_STANDIN else "https://api.stripe.com",
)
STRIPE_WEBHOOK_SECRET = env_str(
    "STRIPE_WEBHOOK_SECRET", "whsec_standin_development_only" if STRIPE_STANDIN else ""
)
STRIPE_LIVE_MODE = STRIPE_SECRET_KEY.startswith("sk_live_")
STRIPE_TEST_SECRET_KEY = "" if STRIPE_LIVE_MODE else STRIPE_SECRET_KEY
STRIPE_LIVE_SECRET_KEY = STRIPE_SECRET_KEY if STRIPE_LIVE_MODE else ""
# One attempt's timeout; never more than what is left of the request's budget below.
STRIPE_TIMEOUT_SECONDS = float(env_str("STRIPE_TIMEOUT_SECONDS", "10"))
STRIPE_MAX_NETWORK_RETRIES = env_int("STRIPE_MAX_NETWORK_RETRIES", 2)
# All the Stripe time of one request, retries and back-off included; then 503 with Retry-After.
STRIPE_REQUEST_BUDGET_SECONDS = float(env_str("STRIPE_REQUEST_BUDGET_SECONDS", "10"))
if not 0 < STRIPE_REQUEST_BUDGET_SECONDS <= 60:
    raise ImproperlyConfigured("STRIPE_REQUEST_BUDGET_SECONDS must be more than 0 and at most 60")
STRIPE_BREAKER_FAIL_MAX = env_int("STRIPE_BREAKER_FAIL_MAX", 5)
STRIPE_BREAKER_RESET_SECONDS = env_int("STRIPE_BREAKER_RESET_SECONDS", 30)
# /health says Stripe is degraded while a call has been waiting longer than this.
STRIPE_SLOW_CALL_SECONDS = float(env_str("STRIPE_SLOW_CALL_SECONDS", "5"))
DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
DJSTRIPE_USE_NATIVE_JSONFIELD = True

# --- `make run` readiness -----------------------------------------------------------------------
# scripts/run.sh sets DEMO_SETUP_EXPECTED=1: /health/ready then answers 503 until `manage.py
# demo_setup` has written its marker (the demo catalog and users exist). Off everywhere else.
DEMO_SETUP_EXPECTED = env_bool("DEMO_SETUP_EXPECTED", default=False)
DEMO_SETUP_MARKER = VAR_DIR / "demo-setup.done"

# --- Pricing --------------------------------------------------------------------------------------
BILLING_DEFAULT_CURRENCY = env_str("BILLING_DEFAULT_CURRENCY", "USD").upper()
# The request header a trusted proxy sets to the client's country (e.g. Cloudflare's CF-IPCountry):
# a customer's pricing country comes from it at their first purchase, never from a request
# parameter (docs/pricing-trust.md). Empty: no country is trusted, every customer gets the default
# zone. Set it only when that proxy is the only way in (it would otherwise be the client's word).
# `make run` (development) trusts CF-IPCountry so the demo can be priced per country.
PRICING_COUNTRY_HEADER = env_str("PRICING_COUNTRY_HEADER", "CF-IPCountry" if APP_ENV == "development" else "")

# --- Families ------------------------------------------------------------------------------------
# A family invitation not accepted within this many hours expires.
FAMILY_INVITATION_TTL_HOURS = env_int("FAMILY_INVITATION_TTL_HOURS", 7 * 24)

# --- Domain events: the outbox and its relay to Kafka (payments_project/events) --------------------
# Without KAFKA_BOOTSTRAP_SERVERS the relay stays off; events are still recorded, and readable in
# the admin and at GET /api/v1/events/.
KAFKA_BOOTSTRAP_SERVERS = env_str("KAFKA_BOOTSTRAP_SERVERS")
KAFKA_TOPIC = env_str("KAFKA_TOPIC", "payment-events")
# Passed to librdkafka as they are when set (names as in its CONFIGURATION.md).
KAFKA_SECURITY = {
    "security.protocol": env_str("KAFKA_SECURITY_PROTOCOL"),
    "sasl.mechanism": env_str("KAFKA_SASL_MECHANISM"),
    "sasl.username": env_str("KAFKA_SASL_USERNAME"),
    "sasl.password": env_str("KAFKA_SASL_PASSWORD"),
    "ssl.ca.location": env_str("KAFKA_SSL_CA_LOCATION"),
    "ssl.certificate.location": env_str("KAFKA_SSL_CERTIFICATE_LOCATION"),
    "ssl.key.location": env_str("KAFKA_SSL_KEY_LOCATION"),
    "ssl.key.password": env_str("KAFKA_SSL_KEY_PASSWORD"),
}
# CloudEvents `source` of every event.
EVENTS_SOURCE = env_str("EVENTS_SOURCE", "/payments-back-office")
# Check each payload against its schema when it is recorded (a bug fails loudly in development and
# tests; production trusts the tests and skips the cost).
EVENTS_VALIDATE_PAYLOADS = env_bool("EVENTS_VALIDATE_PAYLOADS", default=not PRODUCTION)
EVENTS_RELAY_BATCH = env_int("EVENTS_RELAY_BATCH", 1000)
EVENTS_RELAY_LEASE_SECONDS = env_int("EVENTS_RELAY_LEASE_SECONDS", 30)
EVENTS_RELAY_MESSAGE_TIMEOUT_SECONDS = env_int("EVENTS_RELAY_MESSAGE_TIMEOUT_SECONDS", 10)
EVENTS_RELAY_POLL_SECONDS = float(env_str("EVENTS_RELAY_POLL_SECONDS", "1.0"))
EVENTS_RELAY_BACKOFF_MAX_SECONDS = env_int("EVENTS_RELAY_BACKOFF_MAX_SECONDS", 30)
EVENTS_RELAY_HEARTBEAT_SECONDS = env_int("EVENTS_RELAY_HEARTBEAT_SECONDS", 5)
EVENTS_RELAY_METRICS_PORT = env_int("EVENTS_RELAY_METRICS_PORT", 0)  # 0: the relay serves no /metrics
EVENTS_RETENTION_HOURS = env_int("EVENTS_RETENTION_HOURS", 24 * 7)  # published rows kept this long
EVENTS_BACKLOG_DEGRADED_SECONDS = env_int("EVENTS_BACKLOG_DEGRADED_SECONDS", 60)  # /health: degraded past it
EVENTS_FEED_SETTLE_SECONDS = env_int("EVENTS_FEED_SETTLE_SECONDS", 2)  # API feed: clock margin

# --- Logging: one JSON object per line, each carrying the request id -----------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOG_FORMAT = env_str("LOG_FORMAT", "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "payments_project.observability.RequestIdFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "timestamp": False,
        },
        "plain": {"format": "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["request_id"],
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "stripe": {"level": "WARNING"},
        "aiohttp.access": {"level": "WARNING"},
        "payments_project.events.kafka": {"level": "WARNING"},
    },
}
