"""wrk, the C load generator the HTTP benches use when it is installed (`apt-get install wrk`): it
takes a fraction of the CPU a Python generator takes from the same cores as the server."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def available() -> bool:
    return shutil.which("wrk") is not None


def run(
    script: str,
    *,
    url: str,
    connections: int,
    threads: int,
    duration: float,
    args: tuple[str, ...] = (),
    timeout_s: int | None = None,
) -> dict[str, Any]:
    """Run wrk with the Lua `script` for `duration` seconds; what it measured:
    requests, ok (2xx/3xx answers), errors (other answers and socket errors), seconds, rps,
    p50_ms and p99_ms. `args` go to the script; `timeout_s` is wrk's per-request timeout."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    if timeout_s is not None:
        command += ["--timeout", f"{timeout_s}s"]
    command += ["-s", handle.name, url]
    if args:
        command += ["--", *args]
    try:
        out = subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=duration + 60
        ).stdout
    finally:
        Path(handle.name).unlink(missing_ok=True)
    requests, value, unit = _number(r"(\d+) requests in ([\d.]+)(ms|s|m)\b", out, 3)
    seconds = float(value) * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    refused = int(non_2xx.group(1)) if non_2xx else 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": int(requests),
        "ok": int(requests) - refused,
        "errors": refused + (sum(int(x) for x in socket_errors.groups()) if socket_errors else 0),
        "seconds": round(seconds, 2),
        "rps": float(_number(r"Requests/sec:\s+([\d.]+)", out, 1)[0]),
        "p50_ms": _ms(_number(r"\s50%\s+([\d.]+(?:us|ms|s))", out, 1)[0]),
        "p99_ms": _ms(_number(r"\s99%\s+([\d.]+(?:us|ms|s))", out, 1)[0]),
        "generator": "wrk",
    }


def _number(pattern: str, text: str, groups: int) -> tuple[str, ...]:
    found = re.search(pattern, text)
    if found is None:
        raise RuntimeError(f"wrk's output has no {pattern!r}:\n{text}")
    return found.groups()[:groups]


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return round(float(number) * _UNITS[unit], 2)
