"""What refusing bad input before parsing costs: the input guard middleware, in process.

    .venv/bin/python bench/input_guard.py

Times InputGuardMiddleware (payments_project/security.py) around a view that does nothing, best
of 5 runs: (a) a GET with a query string, (b) a typical POST /payments/ JSON body, (c) a 1 MiB JSON
body of strings full of brackets (accepted: the scanner skips strings), (d) a 1 MiB body nested
100,000 levels deep (refused), (e) a 1 MiB body of 40 brackets then one unclosed string of
escaped quotes (the worst case for a string scanner that backtracks; refused, too deep). Request
objects are built before the clock starts. The last line is
`input_guard: get_us=N post_us=N big_ok_ms=N deep_refused_ms=N unclosed_ms=N`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "payments_project.settings")
os.environ.setdefault("APP_ENV", "test")

import django

django.setup()

from django.http import HttpResponse  # noqa: E402
from django.test import RequestFactory  # noqa: E402

from payments_project.security import InputGuardMiddleware  # noqa: E402

OK = HttpResponse(b"ok")
guard = InputGuardMiddleware(lambda request: OK)  # the view costs nothing: what is timed is the guard
factory = RequestFactory()


def _best(make: Any, repeat: int) -> float:
    """Seconds per request, best of 5 runs of `repeat` requests (each request made fresh)."""
    best = float("inf")
    for _ in range(5):
        requests = [make() for _ in range(repeat)]
        started = time.perf_counter()
        for request in requests:
            guard(request)
        best = min(best, (time.perf_counter() - started) / repeat)
    return best


def main() -> None:
    payment = json.dumps(
        {"amount": 1500, "currency": "EUR", "description": "Poster", "metadata": {"sku": "p-1"}}
    )
    big = json.dumps({"notes": ["[{" * 50 + "x" * 400] * 1900})  # just under 1 MiB
    deep = "[" * 100_000 + "]" * 100_000
    unclosed = "[" * 40 + '"' + '\\"' * 500_000
    figures = {
        "get_us": _best(
            lambda: factory.get("/api/v1/entitlements/check?feature=export_pdf&user_id=42"), 20_000
        )
        * 1e6,
        "post_us": _best(
            lambda: factory.post("/api/v1/payments/", payment, content_type="application/json"), 20_000
        )
        * 1e6,
        "big_ok_ms": _best(lambda: factory.post("/api/v1/families/", big, content_type="application/json"), 5)
        * 1e3,
        "deep_refused_ms": _best(
            lambda: factory.post("/api/v1/families/", deep, content_type="application/json"), 5
        )
        * 1e3,
        "unclosed_ms": _best(
            lambda: factory.post("/api/v1/families/", unclosed, content_type="application/json"), 5
        )
        * 1e3,
    }
    status = guard(factory.post("/api/v1/families/", deep, content_type="application/json")).status_code
    accepted = guard(factory.post("/api/v1/families/", big, content_type="application/json")).status_code
    print(f"body sizes: big={len(big)} deep={len(deep)}; answers: big={accepted} deep={status}")
    print("input_guard: " + " ".join(f"{name}={value:.2f}" for name, value in figures.items()))


if __name__ == "__main__":
    main()
