"""The WSGI application, as the production server (payments_project/serve.py) loads it per worker."""

import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

from payments_project.metrics_multiprocess import metrics_forget_dead_processes
from payments_project.wsgi_environ import without_process_environment

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "payments_project.settings")
metrics_forget_dead_processes()  # a worker started in place of a dead one: drop its live gauges
_django = get_wsgi_application()

from billing.stripe.wsgi import stripe_webhook_wsgi  # noqa: E402 - needs the apps loaded above
from payments_project.hotpath import hot_paths_wsgi  # noqa: E402

# Signed Stripe deliveries (billing/stripe/wsgi.py) and the warm token hot paths
# (payments_project/hotpath.py) answered before Django's handler; the process environment is
# dropped first, so no path sees it.
application = without_process_environment(hot_paths_wsgi(stripe_webhook_wsgi(_django)))

# Build what Django otherwise builds on the first request (the URL resolvers), then move every
# object alive now out of the garbage collector's reach: a full collection would otherwise walk
# Django's whole import graph every few thousand requests, a pause of tens of milliseconds (most
# of the p99 of bench/entitlements.py before this). Objects made per request are collected as usual.
get_resolver().reverse_dict  # noqa: B018 - populates the resolver tree
gc.collect()
gc.freeze()
