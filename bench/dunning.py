"""The dunning sweep at scale: one sweep over 100,000 subscriptions with 10,000 due retries.

    .venv/bin/python bench/dunning.py [--subscriptions 100000] [--due 10000] [--batch 1000]

Migrates PostgreSQL (BENCH_DATABASE_URL, default `payments_bench`), then (not timed) writes the
subscriptions, one past-due dunning case per tenth of them with its four retries (the first due
now, the others in the days to come). Timed: one `dunning_sweep()` as beat runs it, claiming the
due retries in batches (SELECT ... FOR UPDATE SKIP LOCKED, one UPDATE per batch) and publishing
one Celery task per retry to the broker (BENCH_BROKER_URL, default redis://127.0.0.1:6379/8; the
queue is purged afterwards, no worker runs them). SQL statements are counted on the connection.

Last line: `dunning: sweep_s=N due=10000 statements=N`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from lib.procs import database_create  # noqa: E402

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/payments_bench")
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/8")
os.environ.update(
    {
        "APP_ENV": "test",
        "DATABASE_URL": DATABASE_URL,
        "CELERY_BROKER_URL": BROKER_URL,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "plain",
        "DJANGO_SETTINGS_MODULE": "payments_project.settings",
    }
)


def database_prepare() -> None:
    database_create(DATABASE_URL)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def populate(subscriptions: int, due: int) -> None:
    """`subscriptions` active ones (kept between runs), and afresh `due` past-due ones with a case each."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
    from django.db import connection
    from django.utils import timezone

    from billing.models import Plan
    from subscriptions.dunning.models import DunningAttempt, DunningCase
    from subscriptions.dunning.selectors import dunning_policy_for
    from subscriptions.models import Subscription

    User = get_user_model()
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE subscriptions_dunningattempt, subscriptions_dunningemail, subscriptions_dunningcase"
        )
    plan, _ = Plan.objects.get_or_create(code="bench", defaults={"name": "Bench"})
    have = Subscription.objects.filter(plan=plan).count()
    chunk = 5000
    for start in range(have, subscriptions, chunk):
        end = min(start + chunk, subscriptions)
        users = User.objects.bulk_create(
            User(
                username=f"bench-dunning-{n}",
                email=f"bench{n}@example.com",
                password=UNUSABLE_PASSWORD_PREFIX,
            )
            for n in range(start, end)
        )
        Subscription.objects.bulk_create(
            Subscription(user=u, plan=plan, status="active", stripe_subscription_id=f"sub_bench{n:07d}")
            for n, u in zip(range(start, end), users, strict=True)
        )
    ids = list(Subscription.objects.filter(plan=plan).order_by("pk").values_list("pk", flat=True))
    step = max(1, len(ids) // due)
    chosen = ids[::step][:due]
    Subscription.objects.filter(plan=plan).update(status="active")
    Subscription.objects.filter(pk__in=chosen).update(status="past_due")
    policy = dunning_policy_for(plan=None)
    now = timezone.now()
    opened = now - timedelta(days=1, minutes=5)
    for start in range(0, len(chosen), chunk):
        cases = DunningCase.objects.bulk_create(
            DunningCase(
                subscription_id=pk,
                policy=policy,
                stripe_invoice_id=f"in_bench{pk:08d}",
                amount_due=999,
                currency="USD",
                opened_at=opened,
                cancel_at=opened + timedelta(days=14),
            )
            for pk in chosen[start : start + chunk]
        )
        DunningAttempt.objects.bulk_create(
            DunningAttempt(
                case=case,
                number=number,
                due_at=opened + timedelta(days=days),
                idempotency_key=f"dunning:{case.stripe_invoice_id}:{number}",
            )
            for case in cases
            for number, days in enumerate((1, 3, 5, 7), start=1)
        )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE subscriptions_dunningattempt; ANALYZE subscriptions_dunningcase")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    database_prepare()
    populate(args.subscriptions, args.due)

    from celery import current_app
    from django.db import connection

    from subscriptions.dunning.services import dunning_sweep

    statements = 0

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    current_app.connection_for_write().ensure_connection(max_retries=1)  # connect before timing
    from subscriptions.dunning import services

    publishing = 0.0
    publish = services._enqueue_each(services.RETRY_TASK)

    def timed_publish(ids: list[int]) -> None:
        nonlocal publishing
        began = time.monotonic()
        publish(ids)
        publishing += time.monotonic() - began

    with connection.execute_wrapper(count):
        started = time.monotonic()
        result = dunning_sweep(batch_size=args.batch, enqueue=timed_publish)
        elapsed = time.monotonic() - started
    purged = current_app.control.purge()
    print(
        f"claimed {result.claimed} due retries in {result.batches} batches of up to {args.batch}: "
        f"{elapsed - publishing:.2f} s in PostgreSQL, {publishing:.2f} s publishing to the broker; "
        f"{purged} queued tasks purged afterwards"
    )
    print(f"dunning: sweep_s={elapsed:.2f} due={result.claimed} statements={statements}")


if __name__ == "__main__":
    main()
