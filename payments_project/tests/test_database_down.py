"""With the database unreachable the API answers 503 in the error format, never a guess.

Runs in a fresh interpreter whose DATABASE_URL points at a closed port (the test process keeps
its own working database).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import json, django
django.setup()
from django.test import Client
client = Client(HTTP_HOST="127.0.0.1")
out = {}
check = client.get("/api/v1/entitlements/check?feature=export_pdf", HTTP_AUTHORIZATION="Token abc")
out["check"] = [check.status_code, check.json(), check.get("Retry-After")]
live = client.get("/health/live")
out["live"] = live.status_code
ready = client.get("/health/ready")
out["ready"] = [ready.status_code, ready.json()["components"]["database"]["status"]]
print(json.dumps(out))
"""


def test_database_down_gives_503_on_the_api_and_readiness_but_liveness_stays() -> None:
    env = {
        **os.environ,
        "APP_ENV": "test",
        "DJANGO_SETTINGS_MODULE": "payments_project.settings",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:1/payments",
        "DATABASE_CONNECT_TIMEOUT": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["check"] == [
        503,
        {
            "error": {
                "code": "database_unavailable",
                "message": "The service cannot reach its database; retry shortly.",
                "fields": {},
            }
        },
        "5",
    ]
    assert out["live"] == 200
    assert out["ready"] == [503, "down"]
