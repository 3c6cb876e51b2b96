#!/usr/bin/env bash
# `make run`: the whole system on one machine with nothing configured. Ctrl-C stops all of it.
# Embedded defaults: SQLite and a file broker under var/, local-memory cache, the Stripe stand-in.
# DATABASE_URL, REDIS_URL, CELERY_BROKER_URL, STRIPE_SECRET_KEY, KAFKA_BOOTSTRAP_SERVERS... switch
# each part to a real one.
set -euo pipefail
cd "$(dirname "$0")/.."
export VENV=${VENV:-.venv}
export PY=${PY:-$VENV/bin/python}
export WEB_PORT=${PORT:-8000}
export APP_ENV=${APP_ENV:-development}
export DJANGO_DEBUG=${DJANGO_DEBUG:-1}
export LOG_FORMAT=${LOG_FORMAT:-plain}
export STRIPE_STANDIN_PORT=${STRIPE_STANDIN_PORT:-8420}
export PYTHONUNBUFFERED=1
mkdir -p var/celery/out var/celery/processed var/celery/control var/celery/bad

"$PY" scripts/dev_migrate.py  # migrate; an empty SQLite database starts from a cached migrated copy
# The stand-in signs its webhooks with this secret; dj-stripe verifies them against the same row.
export STRIPE_WEBHOOK_SECRET=${STRIPE_WEBHOOK_SECRET:-whsec_standin_development_only}
webhook_path=$("$PY" manage.py stripe_webhook_endpoint --base-url "http://127.0.0.1:$WEB_PORT" | tail -n 1)
export STANDIN_WEBHOOK_URL="http://127.0.0.1:$WEB_PORT$webhook_path"

# /health/ready answers 503 until demo_setup (Procfile.dev's web) writes its marker, then prints READY.
export DEMO_SETUP_EXPECTED=1
rm -f "${VAR_DIR:-var}/demo-setup.done"

# Domain events go to Kafka: an embedded broker (Tansu, dev-only, memory storage) unless
# KAFKA_BOOTSTRAP_SERVERS names one. `python manage.py events_tail` shows them arriving.
export KAFKA_TOPIC=${KAFKA_TOPIC:-payment-events}
processes=(web worker relay)
if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  export KAFKA_PORT=${KAFKA_PORT:-9092}
  export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT"
  processes=(kafka "${processes[@]}")
  echo "Kafka: embedded broker (Tansu) on $KAFKA_BOOTSTRAP_SERVERS, topic $KAFKA_TOPIC"
else
  echo "Kafka: $KAFKA_BOOTSTRAP_SERVERS, topic $KAFKA_TOPIC"
fi
if [ -z "${STRIPE_SECRET_KEY:-}" ]; then
  processes=(stripe "${processes[@]}")
  echo "Stripe: local stand-in on http://127.0.0.1:$STRIPE_STANDIN_PORT, webhooks to $STANDIN_WEBHOOK_URL"
else
  echo "Stripe: real API with your key; forward webhooks with: stripe listen --forward-to $STANDIN_WEBHOOK_URL"
fi
echo "Serving on http://127.0.0.1:$WEB_PORT (admin at /admin/, API at /api/v1/, docs at /api/v1/docs/)"
# Every process runs under devtools/supervise.py: one that dies is started again and the
# others stay up (honcho alone stops everything when one process exits).
exec "$VENV/bin/honcho" -f Procfile.dev start "${processes[@]}"
