# Production image: granian serves the API, the admin (static files via WhiteNoise) and webhooks.
# The same image runs the other processes (see docker-compose.yml):
#   celery -A payments_project worker      Celery worker (Stripe events, refunds...)
#   celery -A payments_project beat        scheduled jobs
#   python manage.py events_relay          domain events outbox -> Kafka (KAFKA_BOOTSTRAP_SERVERS)
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 APP_ENV=production VAR_DIR=/app/var
WORKDIR /app
COPY requirements.txt constraints.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# collectstatic needs settings that import cleanly; these build-time values are never used at run time.
RUN DJANGO_SECRET_KEY=build DJANGO_ALLOWED_HOSTS=build STRIPE_SECRET_KEY=sk_test_build000000000000000000000 \
    REDIS_URL=redis://build:6379/0 CELERY_BROKER_URL=redis://build:6379/1 \
    python manage.py collectstatic --noinput
RUN useradd --create-home app && mkdir -p /app/var && chown -R app /app/var
USER app
EXPOSE 8000
# Workers (one per usable core), threads, access log: payments_project/serve.py, from the environment.
CMD ["python", "-m", "payments_project.serve"]
