"""A real single-node Apache Kafka broker (KRaft, combined broker+controller) for local use.

The broker classpath comes from Maven Central through ``deploy/kafka/pom.xml`` and is
copied once into ``<repo>/.careloop/kafka/libs`` (git-ignored). The broker runs as a
``java`` child process in its own process group, logging to ``<data_dir>/kafka.log``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from careloop_kit.infra.ports import port_is_open
from careloop_kit.infra.process import ChildProcessServer

KAFKA_POM = Path("deploy/kafka/pom.xml")
"""The Maven descriptor of the broker classpath, relative to the repository root."""

JARS_DIR = Path(".careloop/kafka/libs")
"""Where the broker jars are copied, relative to the repository root (git-ignored)."""

MIN_JAVA = 17

TEST_BROKER_OVERRIDES: dict[str, str] = {
    # Crash tests SIGKILL consumers and wait for the group to move their partitions, which
    # takes one session timeout; they shorten it (`kafka_session_timeout_ms`) below the
    # broker's default floor of 6 s. Every other broker keeps Kafka's floor.
    "group.min.session.timeout.ms": "3000",
}
"""Broker properties of the test session's broker (`careloop_kit.testing.plugin`)."""
_TOPIC_ALREADY_EXISTS = 36

_T = TypeVar("_T")


class KafkaSetupError(RuntimeError):
    """Java or Maven is missing, or the broker classpath could not be fetched."""


class KafkaStartError(RuntimeError):
    """The broker did not come up; the message carries the tail of its log."""


# --------------------------------------------------------------------------- repo root


def find_repo_root(start: Path | None = None) -> Path:
    """The directory holding ``deploy/kafka/pom.xml``.

    Looks at ``$CARELOOP_ROOT`` first, then walks up from ``start`` (default: the current
    directory), then up from this source file (a workspace checkout).
    """
    env = os.environ.get("CARELOOP_ROOT")
    if env:
        root = Path(env).expanduser().resolve()
        if (root / KAFKA_POM).is_file():
            return root
        raise KafkaSetupError(f"CARELOOP_ROOT={env} does not contain {KAFKA_POM}")
    candidates = [(start or Path.cwd()).resolve(), Path(__file__).resolve().parent]
    for base in candidates:
        for directory in (base, *base.parents):
            if (directory / KAFKA_POM).is_file():
                return directory
    raise KafkaSetupError(
        f"could not find {KAFKA_POM} above {candidates[0]}; run from the Careloop checkout "
        "or set CARELOOP_ROOT"
    )


# --------------------------------------------------------------------------- toolchain


def java_major_version(java: str = "java") -> int:
    """The major version of ``java`` (8 for 1.8.x), or raise :class:`KafkaSetupError`."""
    exe = shutil.which(java)
    if exe is None:
        raise KafkaSetupError(_install_hint("java was not found on PATH"))
    out = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        raise KafkaSetupError(f"could not read the Java version from: {out.stderr.strip()!r}")
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def _install_hint(problem: str) -> str:
    return (
        f"{problem}. The local Kafka broker needs Java {MIN_JAVA}+ and Maven: "
        "on Debian/Ubuntu `apt-get install openjdk-17-jre-headless maven`, "
        "on macOS `brew install openjdk@17 maven`."
    )


def _check_java() -> None:
    major = java_major_version()
    if major < MIN_JAVA:
        raise KafkaSetupError(_install_hint(f"found Java {major}"))


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_kafka_jars(root: Path | None = None) -> Path:
    """Return a directory holding the whole broker classpath, fetching it with Maven if needed.

    The jars are copied again when the pom changes (its sha256 is kept in a stamp file).
    Safe to call from several processes at once (a file lock guards the copy).
    """
    root = find_repo_root() if root is None else root.resolve()
    pom = root / KAFKA_POM
    if not pom.is_file():
        raise KafkaSetupError(f"{pom} does not exist")
    libs = root / JARS_DIR
    stamp = libs.parent / "libs.sha256"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()

    def fresh() -> bool:
        return (
            stamp.is_file()
            and stamp.read_text().strip() == digest
            and libs.is_dir()
            and any(libs.glob("kafka_2.13-*.jar"))
        )

    if fresh():
        return libs
    with _file_lock(libs.parent / ".lock"):
        if fresh():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaSetupError(_install_hint("mvn (Maven) was not found on PATH"))
        _check_java()
        print(
            f"careloop: fetching the Kafka broker jars with Maven into {libs} ...",
            file=sys.stderr,
            flush=True,
        )
        staging = libs.parent / "libs.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        proc = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if proc.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            raise KafkaSetupError(
                f"mvn dependency:copy-dependencies failed (exit {proc.returncode}):\n"
                f"{_tail(proc.stdout + proc.stderr, 40)}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        stamp.write_text(digest + "\n")
    return libs


# --------------------------------------------------------------------------- broker


def _cluster_id() -> str:
    # A Kafka cluster id is a base64url UUID (22 chars). One starting with "-" would be
    # read as an option by the storage tool, so draw again in that case.
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):
            return value


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run_sync(factory: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine to completion from sync code, even when this thread has a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_as_coro(factory))
    result: list[_T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(_as_coro(factory)))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="careloop-run-sync")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


async def _as_coro(factory: Callable[[], Awaitable[_T]]) -> _T:
    return await factory()


async def describe_cluster(bootstrap: str, timeout_ms: int = 5000) -> dict[str, Any]:
    """Cluster metadata (brokers, controller id, cluster id) through a real admin client."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        info: dict[str, Any] = await admin.describe_cluster()
        return info
    finally:
        await admin.close()


async def create_topics(
    bootstrap: str,
    names: list[str],
    partitions: int = 3,
    config: dict[str, str] | None = None,
    replication_factor: int = 1,
) -> None:
    """Create topics, leaving those that already exist as they are."""
    if not names:
        return
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        response = await admin.create_topics(
            [
                NewTopic(
                    name=name,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    topic_configs=dict(config or {}),
                )
                for name in names
            ]
        )
    finally:
        await admin.close()
    failures = [
        f"{err[0]}: error {err[1]} {err[2] if len(err) > 2 else ''}".strip()
        for err in response.topic_errors
        if err[1] not in (0, _TOPIC_ALREADY_EXISTS)
    ]
    if failures:
        raise RuntimeError("could not create topics: " + "; ".join(failures))


class KafkaServer(ChildProcessServer):
    """One local Kafka broker in KRaft combined mode (broker and controller in one process).

    ``data_dir`` keeps the log directory, the generated properties and ``kafka.log``; it
    survives :meth:`stop`/:meth:`kill`, so :meth:`start` again brings back the same data.
    """

    label = "kafka"
    log_name = "kafka.log"
    start_error = KafkaStartError

    def __init__(
        self,
        data_dir: Path,
        port: int,
        controller_port: int,
        libs: Path,
        *,
        heap: str = "512m",
        overrides: dict[str, str] | None = None,
    ) -> None:
        super().__init__(data_dir)
        self.port = port
        self.controller_port = controller_port
        self.libs = Path(libs).resolve()
        self.heap = heap
        self.overrides = dict(overrides or {})

    # -- paths and properties

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def properties(self) -> dict[str, str]:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "num.partitions": "3",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
        }
        props.update(self.overrides)
        return props

    def _write_properties(self) -> None:
        lines = ["# Generated by careloop_kit.infra.kafka; edits are overwritten on start."]
        lines += [f"{key}={value}" for key, value in self.properties().items()]
        self.properties_file.write_text("\n".join(lines) + "\n")

    def _java(self, main: str, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise KafkaSetupError(_install_hint("java was not found on PATH"))
        return [
            java,
            f"-Xmx{self.heap}",
            "-Xss1m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSZ",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    # -- lifecycle

    def format_storage(self) -> None:
        """Format the KRaft log directory once (no-op when ``meta.properties`` exists)."""
        if (self.log_dir / "meta.properties").exists():
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cmd = self._java(
            "kafka.tools.StorageTool",
            "format",
            "-t",
            _cluster_id(),
            "-c",
            str(self.properties_file),
        )
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise KafkaStartError(
                f"kafka storage format failed (exit {proc.returncode}):\n"
                f"{_tail(proc.stdout + proc.stderr, 40)}"
            )

    def _prepare(self) -> None:
        _check_java()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_properties()
        self.format_storage()

    def _command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.properties_file))

    def _wait_ready(self, deadline: float) -> None:
        """Ready once a metadata request lists the broker."""

        def not_ready() -> str | None:
            if not port_is_open(self.port):
                return "port not open"
            try:
                info = run_sync(lambda: describe_cluster(self.bootstrap_servers, 3000))
            except Exception as exc:
                return repr(exc)
            return None if info.get("brokers") else f"metadata lists no broker yet: {info}"

        self._wait_until(not_ready, deadline, "ready", interval=0.25)
