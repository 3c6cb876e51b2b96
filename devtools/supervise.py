"""Keep one `make run` process running: start it again when it dies, stop it when told to.

    python -m devtools.supervise [--name worker] -- COMMAND [ARGS...]

honcho (Procfile.dev) stops every process as soon as one exits, so a worker that died on its own
took the web server and the stand-in down with it. Under this supervisor a command that exits (or
is killed) is started again after a pause (1 s, doubling up to 30 s while it keeps dying within
a minute of its start), and honcho only ever sees it exit when honcho itself asks: SIGTERM or
SIGINT are passed on, the command's whole process group is stopped (a Celery worker's embedded
beat is a child of its own), and the supervisor exits 0.

Development only (`make run`); production restarts processes with its orchestrator.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

FIRST_PAUSE = 1.0
MAX_PAUSE = 30.0
HEALTHY_AFTER = 60.0  # a run this long resets the pause
STOP_GRACE = 10.0
_PR_SET_PDEATHSIG = 1


class Supervisor:
    def __init__(self, command: Sequence[str], *, name: str = "") -> None:
        self.command = list(command)
        self.name = name or os.path.basename(self.command[0])
        self.stopping = threading.Event()
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None

    def run(self) -> int:
        pause = FIRST_PAUSE
        while not self.stopping.is_set():
            started = time.monotonic()
            self.starts += 1
            # Its own process group, so that what it leaves behind can be stopped with it.
            process = self._process = subprocess.Popen(  # noqa: S603 - the Procfile's own command
                self.command, start_new_session=True, preexec_fn=_die_with_parent
            )
            if self.stopping.is_set():  # told to stop while it was starting
                _signal_group(process.pid, signal.SIGTERM)
            code = process.wait()
            self._stop_group(process.pid)
            if self.stopping.is_set():
                break
            if time.monotonic() - started > HEALTHY_AFTER:
                pause = FIRST_PAUSE
            _say(f"{self.name} exited with {code}; starting it again in {pause:.0f} s")
            self.stopping.wait(pause)
            pause = min(pause * 2, MAX_PAUSE)
        return 0

    def stop(self, *_: object) -> None:
        """Pass the stop on to the command's process group; run() then returns."""
        self.stopping.set()
        process = self._process
        if process is not None and process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)

    def _stop_group(self, pgid: int) -> None:
        """What the command left running in its group (e.g. an embedded beat) goes with it."""
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.1)
        _signal_group(pgid, signal.SIGKILL)


def _die_with_parent() -> None:
    """Linux: the command gets SIGTERM if the supervisor itself is killed (honcho's SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _say(message: str) -> None:
    print(f"supervise: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    supervisor = Supervisor(command, name=args.name)
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
