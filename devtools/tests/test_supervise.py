"""devtools/supervise.py: what keeps the `make run` worker and stand-in up."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from devtools import supervise

# Exits 3 on its first run (leaving a child behind in its group), then runs until stopped.
SCRIPT = """
import os, subprocess, sys, time
from pathlib import Path
runs = Path(sys.argv[1])
runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
if len(runs.read_text()) == 1:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    Path(sys.argv[2]).write_text(str(child.pid))
    sys.exit(3)
Path(sys.argv[3]).write_text("up")
time.sleep(60)
"""


def _dead(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" in status.read_text()  # a zombie waiting for its reaper is dead
    except FileNotFoundError:
        return True


def _wait_for(condition: object, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_a_command_that_dies_is_started_again_and_what_it_left_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a supervised command that dies once, leaving a child process in its group
    monkeypatch.setattr(supervise, "FIRST_PAUSE", 0.05)
    runs, orphan, up = tmp_path / "runs", tmp_path / "orphan", tmp_path / "up"
    supervisor = supervise.Supervisor(
        [sys.executable, "-c", SCRIPT, str(runs), str(orphan), str(up)], name="t"
    )
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.run()))

    # when it runs
    thread.start()
    try:
        started_again = _wait_for(up.exists)
    finally:
        supervisor.stop()
        thread.join(timeout=30)

    # then it was started a second time, the first run's child was stopped, and a stop ends it all
    assert started_again
    assert supervisor.starts == 2
    assert _dead(int(orphan.read_text()))
    assert result == [0]
    assert supervisor._process is not None and supervisor._process.poll() is not None


def test_the_command_line_needs_a_command() -> None:
    with pytest.raises(SystemExit):
        supervise.main(["--name", "x", "--"])
