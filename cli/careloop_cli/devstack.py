"""`careloop dev up`: the whole platform on one machine, no Docker.

Starts an embedded PostgreSQL (one database and role per service), an OpenBao
server with persistent raft storage (initialised and unsealed locally, engines,
keys, per-service policies and tokens) and Apache Kafka in KRaft mode from its
Maven jars, the three at once. Then it migrates every service's database and
starts all services at once, each as its own process, with prefixed logs (also
written to `.careloop/logs/<service>.log`). It waits until every service is
ready, seeds a synthetic demo practice (identity once; the schedule and the
referral directory on every start, adding only what is missing), writes
`.careloop/endpoints.json`, and stops everything cleanly on Ctrl-C, also while
it is still starting. Data lives under `.careloop/data/` and survives restarts.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from rich.console import Console

from careloop_cli.envfiles import state_dir, write_env_file
from careloop_cli.registry import SERVICES, ServiceEntry
from careloop_cli.wiring import service_urls
from careloop_kit.bus.kafka import apply_topic_catalogue
from careloop_kit.db.migrate import upgrade
from careloop_kit.infra.kafka import KafkaServer, ensure_kafka_jars
from careloop_kit.infra.openbao import OpenBaoServer, bootstrap_vault
from careloop_kit.infra.ports import port_is_open
from careloop_kit.infra.postgres import PostgresServer
from careloop_kit.settings import KitSettings

console = Console(stderr=True, highlight=False)
COLORS = ["cyan", "magenta", "green", "yellow", "blue", "red"]


class DevStackSettings(BaseSettings):
    """Ports and limits of the local stack (environment prefix `CARELOOP_DEV_`)."""

    model_config = SettingsConfigDict(env_prefix="CARELOOP_DEV_", extra="ignore")

    kafka_port: int = Field(9092, description="Kafka client listener.")
    kafka_controller_port: int = Field(9093, description="Kafka KRaft controller listener.")
    openbao_port: int = Field(8200, description="OpenBao API (cluster port is this + 1).")
    service_port_base: int = Field(
        0, description="If set, service i listens on base + i instead of its default port."
    )
    ready_timeout_s: float = Field(
        90, description="How long to wait for every service to be ready."
    )
    seed_demo: bool = Field(
        True,
        description="Seed the synthetic demo practice (organization, logins and patients on "
        "first start; its schedule on every start, adding only what is missing).",
    )


class ServiceLog:
    """A service's log lines in `.careloop/logs/<service>.log`, from both of its streams."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            self._file.close()


@dataclass
class RunningService:
    entry: ServiceEntry
    port: int
    process: subprocess.Popen[bytes]
    log: ServiceLog
    pumps: list[threading.Thread] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def seed_patients(identity_url: str, patients_url: str, logins: dict[str, Any]) -> list[str]:
    """Register the synthetic demo patients as the demo front desk; returns their ids."""
    from careloop_cli.demo import demo_patients

    desk = next(u for u in logins["users"] if u["role"] == "front_desk")
    with httpx.Client(base_url=identity_url, timeout=30) as client:
        login = client.post(
            "/auth/login",
            json={"org_id": logins["org_id"], "email": desk["email"], "password": desk["password"]},
        )
        login.raise_for_status()
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    ids = []
    with httpx.Client(base_url=patients_url, timeout=30) as client:
        for body in demo_patients():
            body = {**body, "location_id": desk["locations"][0]}
            response = client.post("/patients", json=body, headers=headers)
            response.raise_for_status()
            ids.append(str(response.json()["id"]))
    return ids


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM if `careloop dev up` dies, so nothing is orphaned.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)


def _pump(stream: IO[bytes], prefix: str, color: str, log: ServiceLog) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip()
        log.write(line)
        console.print(f"[{color}]{prefix:>9} |[/] {line}", markup=True, soft_wrap=True)


def _secret(path: Path) -> str:
    """A generated local-development secret, created once and kept owner-only."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    value = secrets.token_urlsafe(24)
    path.write_text(value)
    path.chmod(0o600)
    return value


def service_environment(
    entry: ServiceEntry,
    *,
    port: int,
    ports: dict[str, int],
    database_url: str,
    kafka_bootstrap: str,
    vault_addr: str,
    vault_token: str,
) -> dict[str, str]:
    """The settings `make run` gives a service (all but identity's bootstrap token)."""
    urls = {name: f"http://127.0.0.1:{p}" for name, p in ports.items()}
    own: dict[str, str] = {}
    if entry.name == "messaging":
        # No SMS provider or mail relay here: messages are marked sent and their ids
        # logged (`delivery_mode=log` lines in .careloop/logs/messaging.log).
        own["CARELOOP_DELIVERY_MODE"] = "log"
    return {
        "CARELOOP_ENVIRONMENT": "development",
        "CARELOOP_LOG_JSON": "false",
        "CARELOOP_HTTP_HOST": "127.0.0.1",
        "CARELOOP_HTTP_PORT": str(port),
        "CARELOOP_DATABASE_URL": database_url,
        "CARELOOP_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "CARELOOP_VAULT_ADDR": vault_addr,
        "CARELOOP_VAULT_TOKEN": vault_token,
        **service_urls(entry.name, urls, public_url=urls["gateway"]),
        **own,
    }


class StackStopped(Exception):
    """Ctrl-C (or SIGTERM) came while the stack was still starting."""


class DevStack:
    def __init__(self, settings: DevStackSettings | None = None) -> None:
        self.settings = settings or DevStackSettings()
        self.root = state_dir()
        self.data = self.root / "data"
        self.postgres: PostgresServer | None = None
        self.openbao: OpenBaoServer | None = None
        self.kafka: KafkaServer | None = None
        self.services: list[RunningService] = []
        self._stopping = threading.Event()

    @property
    def endpoints_file(self) -> Path:
        return self.root / "endpoints.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def service_port(self, index: int, entry: ServiceEntry) -> int:
        base = self.settings.service_port_base
        return base + index if base else entry.default_port

    def _check_ports(self) -> None:
        wanted = {
            "Kafka": self.settings.kafka_port,
            "Kafka controller": self.settings.kafka_controller_port,
            "OpenBao": self.settings.openbao_port,
            **{e.name: self.service_port(i, e) for i, e in enumerate(SERVICES.values())},
        }
        busy = [f"{name} port {port}" for name, port in wanted.items() if port_is_open(port)]
        if busy:
            raise SystemExit(
                "cannot start: "
                + ", ".join(busy)
                + " already in use. Is another `make run` running? Stop it, or choose other "
                "ports with CARELOOP_DEV_KAFKA_PORT, CARELOOP_DEV_OPENBAO_PORT, "
                "CARELOOP_DEV_SERVICE_PORT_BASE (see docs/configuration.md)."
            )

    # --- infrastructure ---------------------------------------------------------------

    def start_infrastructure(self) -> dict[str, str]:
        self._check_ports()
        self.data.mkdir(parents=True, exist_ok=True)
        console.print("[bold]careloop[/] starting PostgreSQL, OpenBao and Kafka ...")
        libs = ensure_kafka_jars()
        self.postgres = PostgresServer(self.data / "postgres")
        self.openbao = OpenBaoServer.persistent(self.data / "openbao", self.settings.openbao_port)
        self.kafka = KafkaServer(
            self.data / "kafka",
            self.settings.kafka_port,
            self.settings.kafka_controller_port,
            libs,
        )
        # None of the three needs another, so the stack waits for the slowest, not the sum.
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="careloop-infra") as pool:
            started: list[Future[Any]] = [
                pool.submit(self.postgres.start),
                pool.submit(self._start_openbao),
                pool.submit(self._start_kafka),
            ]
        # Every one has finished starting or failed; down() stops those that started.
        _, tokens, _ = [future.result() for future in started]
        console.print(
            f"[bold]careloop[/] infrastructure up: Kafka {self.kafka.bootstrap_servers}, "
            f"OpenBao {self.openbao.addr}, PostgreSQL {self.postgres.socket_dir}"
        )
        return dict(tokens)

    def _start_openbao(self) -> dict[str, str]:
        """Start OpenBao and set it up (engines, keys, policies); the services' tokens."""
        assert self.openbao is not None
        self.openbao.start()
        return bootstrap_vault(self.openbao.addr, self.openbao.root_token, list(SERVICES))

    def _start_kafka(self) -> None:
        assert self.kafka is not None
        self.kafka.start(timeout=120)
        # The same catalogue, and the same code, as compose's and Helm's `careloop topics apply`.
        asyncio.run(
            apply_topic_catalogue(KitSettings(kafka_bootstrap=self.kafka.bootstrap_servers))
        )

    def prepare_service(
        self, entry: ServiceEntry, port: int, vault_token: str, ports: dict[str, int]
    ) -> dict[str, str]:
        """Create the service's database and role if missing and write its env file;
        returns its settings (`migrate` runs its migrations)."""
        if self.postgres is None or self.openbao is None or self.kafka is None:
            raise RuntimeError("start the infrastructure first")
        role = database = f"careloop_{entry.name}"
        password = _secret(self.root / "secrets" / f"db-{entry.name}")

        async def create() -> None:
            assert self.postgres
            if not await self.postgres.database_exists(database):
                await self.postgres.create_database(database, owner=role, password=password)

        asyncio.run(create())
        env = service_environment(
            entry,
            port=port,
            ports=ports,
            database_url=self.postgres.dsn_for(database, role, password),
            kafka_bootstrap=self.kafka.bootstrap_servers,
            vault_addr=self.openbao.addr,
            vault_token=vault_token,
        )
        if entry.name == "identity":
            env["CARELOOP_BOOTSTRAP_TOKEN"] = _secret(self.root / "secrets" / "identity-bootstrap")
        write_env_file(entry.name, env)
        return env

    # --- services ---------------------------------------------------------------------

    def start_services(self, tokens: dict[str, str]) -> None:
        """Migrate every service's database, then start all services at once."""
        ports = {e.name: self.service_port(i, e) for i, e in enumerate(SERVICES.values())}
        envs = {
            entry.name: {
                **os.environ,
                **self.prepare_service(entry, ports[entry.name], tokens[entry.name], ports),
            }
            for entry in SERVICES.values()
        }
        self.migrate(envs)
        for entry in SERVICES.values():
            process = subprocess.Popen(
                [sys.executable, "-m", "careloop_cli.main", "serve", entry.name],
                env=envs[entry.name],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                preexec_fn=_die_with_parent,
            )
            running = RunningService(
                entry, ports[entry.name], process, ServiceLog(self.logs / f"{entry.name}.log")
            )
            color = COLORS[len(self.services) % len(COLORS)]
            for stream in (process.stdout, process.stderr):
                assert stream is not None
                pump = threading.Thread(
                    target=_pump, args=(stream, entry.name, color, running.log), daemon=True
                )
                pump.start()
                running.pumps.append(pump)
            self.services.append(running)

    def migrate(self, envs: dict[str, dict[str, str]]) -> None:
        """Bring every service's database to its head before any service starts.

        One after the other, in this process: all of them take about two seconds here,
        while a `careloop migrate` process per service would first spend seconds of CPU
        each importing what this process has imported already (and Alembic keeps the
        running migration in module globals, so one process migrates one database at a
        time)."""
        for name, env in envs.items():
            if self._stopping.is_set():
                raise StackStopped
            try:
                upgrade(SERVICES[name].migrations, env["CARELOOP_DATABASE_URL"])
            except Exception as exc:
                raise SystemExit(f"migrations of {name} failed: {exc}") from exc

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout_s
        pending = {s.entry.name: s for s in self.services}
        with httpx.Client(timeout=3) as client:
            while pending:
                for name, running in list(pending.items()):
                    if running.process.poll() is not None:
                        raise SystemExit(
                            f"service {name} exited with {running.process.returncode} during "
                            "start-up; its log lines above say why."
                        )
                    try:
                        if client.get(running.url + "/readyz").status_code == 200:
                            console.print(f"[bold]careloop[/] {name} ready at {running.url}")
                            del pending[name]
                    except httpx.HTTPError:
                        pass
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"not ready after {self.settings.ready_timeout_s:.0f}s: "
                        + ", ".join(pending)
                        + " (see their /readyz and log lines above)"
                    )
                if pending and self._stopping.wait(0.5):
                    raise StackStopped

    def write_endpoints(self) -> dict[str, Any]:
        if self.postgres is None or self.openbao is None or self.kafka is None:
            raise RuntimeError("start the infrastructure first")
        endpoints: dict[str, Any] = {
            "services": {s.entry.name: {"url": s.url, "pid": s.process.pid} for s in self.services},
            "kafka": {"bootstrap": self.kafka.bootstrap_servers, "pid": self.kafka.pid},
            "openbao": {"url": self.openbao.addr},
            "postgres": {"socket_dir": str(self.postgres.socket_dir)},
            "started_at": time.time(),
            "pid": os.getpid(),
        }
        self.endpoints_file.write_text(json.dumps(endpoints, indent=2))
        return endpoints

    def seed_demo(self) -> None:
        """Seed the synthetic demo group: organization, locations, one login per role
        (written to `.careloop/demo-logins.json`) and a few patients once; then, on
        every start, its schedule and its referral directory, adding only what is
        missing."""
        if not self.settings.seed_demo:
            return
        from careloop_cli.demo_referrals import seed_referrals
        from careloop_cli.demo_scheduling import seed_scheduling, sign_in_admin

        logins_file = self.root / "demo-logins.json"
        admin_token = None
        # The logins file is the marker: a stack seeded before identity existed gets seeded.
        if not logins_file.exists():
            admin_token = self._seed_identity(logins_file)
        logins = json.loads(logins_file.read_text())
        urls = {s.entry.name: s.url for s in self.services}
        gateway_url = urls["gateway"] + "/api/v1"
        if admin_token is None:
            # One sign-in for both seeders: each one-time code is good for one sign-in.
            admin = next(u for u in logins["users"] if u["role"] == "org_admin")
            with httpx.Client(base_url=gateway_url, timeout=30) as client:
                admin_token = sign_in_admin(client, logins["org_id"], admin)
        seeded = seed_scheduling(gateway_url, logins, admin_token=admin_token)
        console.print(f"[bold]careloop[/] demo schedule: {seeded.summary()}")
        directory = seed_referrals(gateway_url, logins, admin_token=admin_token)
        console.print(f"[bold]careloop[/] demo referral directory: {directory.summary()}")

    def _seed_identity(self, logins_file: Path) -> str:
        """Seed identity and patients, print the logins; returns the org admin's token."""
        from careloop_cli.demo import seed_identity

        urls = {s.entry.name: s.url for s in self.services}
        bootstrap = _secret(self.root / "secrets" / "identity-bootstrap")
        logins, admin = seed_identity(urls["identity"], bootstrap)
        patients = seed_patients(urls["identity"], urls["patients"], logins)
        logins_file.write_text(json.dumps({**logins, "patient_ids": patients}, indent=2))
        logins_file.chmod(0o600)
        console.print(
            f"[bold]careloop[/] seeded the synthetic demo group {logins['org_id']}: "
            f"{len(logins['locations'])} locations, {len(logins['users'])} logins, "
            f"{len(patients)} patients"
        )
        for user in logins["users"]:
            console.print(f"  {user['role']:<17} {user['email']:<40} {user['password']}")
            if "totp_secret" in user:
                console.print(f"  {'':<17} TOTP secret (authenticator app): {user['totp_secret']}")
        for partner in logins.get("partner_clients", []):
            console.print(
                f"  partner client    {partner['client_id']:<40} {partner['client_secret']}"
                f"  scopes: {' '.join(partner['scopes'])}"
            )
        console.print(f"  (also in {logins_file}; synthetic, local development only)")
        return admin.access_token

    # --- lifecycle --------------------------------------------------------------------

    def up(self) -> None:
        """Start everything, then block until Ctrl-C or a service dies."""
        previous = {
            sig: signal.signal(sig, lambda *_: self._stopping.set())
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            tokens = self.start_infrastructure()
            self.start_services(tokens)
            self.wait_ready()
            if self._stopping.is_set():
                raise StackStopped
            # Seed first: endpoints.json appearing means the stack is ready to use.
            self.seed_demo()
            endpoints = self.write_endpoints()
            console.print("\n[bold green]Careloop is running[/] (Ctrl-C stops everything)")
            for name, info in endpoints["services"].items():
                console.print(f"  {name:<10} {info['url']}   docs: {info['url']}/docs")
            console.print(f"  {'kafka':<10} {endpoints['kafka']['bootstrap']}")
            console.print(f"  {'openbao':<10} {endpoints['openbao']['url']}")
            console.print(f"  endpoints written to {self.endpoints_file}\n")
            while not self._stopping.wait(1):
                dead = [s for s in self.services if s.process.poll() is not None]
                if dead:
                    console.print(
                        f"[bold red]careloop[/] {dead[0].entry.name} exited "
                        f"({dead[0].process.returncode}); stopping the stack"
                    )
                    break
        except StackStopped:
            pass  # a stop asked for during start-up is a clean stop
        finally:
            self.down()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def down(self) -> None:
        console.print("[bold]careloop[/] stopping ...")
        self.endpoints_file.unlink(missing_ok=True)
        for running in self.services:
            if running.process.poll() is None:
                running.process.terminate()
        for running in self.services:
            try:
                running.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                running.process.kill()
                running.process.wait()
        for running in self.services:
            for pump in running.pumps:
                pump.join(timeout=5)
            running.log.close()
        for server in (self.kafka, self.openbao, self.postgres):
            if server is not None:
                try:
                    server.stop()
                except Exception as exc:  # keep stopping the others
                    console.print(f"[red]careloop[/] could not stop {type(server).__name__}: {exc}")
        console.print("[bold]careloop[/] stopped")
