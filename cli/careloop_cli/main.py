"""The `careloop` command line."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from careloop_cli.envfiles import apply_env_file
from careloop_cli.registry import SERVICES, service
from careloop_cli.wiring import SECRETS_DIR_VARIABLE
from careloop_kit.settings import KitSettings

SettingsT = TypeVar("SettingsT", bound=KitSettings)

app = typer.Typer(help="Careloop: run, operate and inspect the platform.", no_args_is_help=True)
dev = typer.Typer(help="The local stack on one machine.", no_args_is_help=True)
audit = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
dlq = typer.Typer(help="Dead-letter topics: inspect and replay.", no_args_is_help=True)
topics = typer.Typer(help="The Kafka topic catalogue.", no_args_is_help=True)
keys = typer.Typer(help="Encryption keys: after a rotation in Vault.", no_args_is_help=True)
vault = typer.Typer(help="Vault (OpenBao) set-up.", no_args_is_help=True)
caregaps = typer.Typer(help="Care gaps, through the gateway.", no_args_is_help=True)
app.add_typer(dev, name="dev")
app.add_typer(audit, name="audit")
app.add_typer(dlq, name="dlq")
app.add_typer(topics, name="topics")
app.add_typer(keys, name="keys")
app.add_typer(vault, name="vault")
app.add_typer(caregaps, name="caregaps")
console = Console()

ServiceName = Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}")]


def load_settings(service_name: str, settings_class: type[SettingsT]) -> SettingsT:
    """A service's settings: CARELOOP_* variables, then files in `CARELOOP_SECRETS_DIR`
    (named after the variable in lower case, as a Vault agent or a mounted Secret writes
    them), then `make run`'s env file on a developer's machine."""
    apply_env_file(service_name)
    secrets_dir = os.environ.get(SECRETS_DIR_VARIABLE)
    if not secrets_dir:
        return settings_class()
    if not Path(secrets_dir).is_dir():
        raise SystemExit(
            f"{SECRETS_DIR_VARIABLE}={secrets_dir} is not a directory; mount the secrets "
            "there or unset the variable"
        )
    return settings_class(_secrets_dir=secrets_dir)


@dev.command("up")
def dev_up() -> None:
    """Start Kafka, PostgreSQL, OpenBao and every service; Ctrl-C stops them all."""
    from careloop_cli.devstack import DevStack

    DevStack().up()


@dev.command("fetch-kafka")
def dev_fetch_kafka() -> None:
    """Fetch the pinned Kafka broker jars with Maven (once)."""
    from careloop_kit.infra.kafka import ensure_kafka_jars

    console.print(f"Kafka jars in {ensure_kafka_jars()}")


@app.command("serve")
def serve(name: ServiceName) -> None:
    """Run one service's HTTP API, relay and consumers (settings from CARELOOP_* variables)."""
    import uvicorn

    entry = service(name)
    settings = load_settings(entry.name, entry.settings_class())
    application = entry.app_factory()(settings)
    uvicorn.run(
        application,
        host=settings.http_host,
        port=settings.http_port,
        ssl_certfile=settings.http_tls_certfile,
        ssl_keyfile=settings.http_tls_keyfile,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


@app.command("migrate")
def migrate(
    name: ServiceName,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Apply a service's database migrations."""
    from careloop_kit.db.migrate import upgrade

    entry = service(name)
    settings = load_settings(entry.name, entry.settings_class())
    upgrade(entry.migrations, settings.database_url.get_secret_value(), revision)
    console.print(f"{entry.name}: database at {revision}")


@audit.command("verify")
def audit_verify(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Verify the audit hash chain and its signed checkpoint; names the first bad record."""
    from careloop_audit.settings import AuditSettings
    from careloop_audit.usecases.verification import verify_trail

    report = asyncio.run(verify_trail(load_settings("audit", AuditSettings)))
    data = report.model_dump(mode="json")
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        table = Table(title="Audit log verification", show_header=False)
        for key, value in data.items():
            table.add_row(str(key), str(value))
        console.print(table)
    raise typer.Exit(0 if data.get("ok") else 1)


def _kit_settings(service_name: str) -> KitSettings:
    return load_settings(service_name, KitSettings)


@dlq.command("list")
def dlq_list(
    group: Annotated[str, typer.Argument(help="Consumer group, e.g. careloop.audit.trail")],
) -> None:
    """Show the records a consumer group dead-lettered, with their errors."""
    from careloop_kit.bus.dlq import list_dead_letters

    settings = _kit_settings(group.split(".")[1] if group.count(".") >= 2 else "audit")
    letters = asyncio.run(list_dead_letters(settings, group))
    table = Table(title=f"Dead letters of {group} ({len(letters)})")
    for column in ("offset", "event id", "type", "reason", "original", "failed at", "error"):
        table.add_column(column)
    for letter in letters:
        table.add_row(
            str(letter.offset),
            str(letter.event_id),
            str(letter.event_type),
            str(letter.reason),
            f"{letter.original_topic}/{letter.original_partition}@{letter.original_offset}",
            str(letter.failed_at),
            (letter.error or "").strip().splitlines()[-1][:80] if letter.error else "",
        )
    console.print(table)


@dlq.command("replay")
def dlq_replay(
    group: Annotated[str, typer.Argument(help="Consumer group, e.g. careloop.audit.trail")],
    event_id: Annotated[
        list[str] | None, typer.Option("--event-id", help="Replay only these event ids.")
    ] = None,
) -> None:
    """Re-deliver dead-lettered records to their original topic (once each)."""
    from careloop_kit.bus.dlq import replay_dead_letters

    settings = _kit_settings(group.split(".")[1] if group.count(".") >= 2 else "audit")
    count = asyncio.run(
        replay_dead_letters(settings, group, event_ids=set(event_id) if event_id else None)
    )
    console.print(f"replayed {count} record(s) of {group}")


@topics.command("apply")
def topics_apply() -> None:
    """Create every topic of the catalogue that is missing: service streams and the
    dead-letter topic of every consumer group (partitions, retention, cleanup policy)."""
    from careloop_kit.bus.kafka import apply_topic_catalogue

    settings = load_settings("topics", KitSettings)
    with console.status(f"applying the topic catalogue to {settings.kafka_bootstrap} ..."):
        report = asyncio.run(apply_topic_catalogue(settings))
    for name in report.created:
        console.print(f"created   {name}")
    for name in report.unchanged:
        console.print(f"unchanged {name}")
    for name, difference in report.differing.items():
        console.print(
            f"[yellow]differs[/]   {name}: {difference}. Kafka only adds partitions, and adding "
            "them moves patients' keys between partitions: decide, then use kafka-topics.sh"
        )
    console.print(
        f"{len(report.created)} created, {len(report.unchanged)} unchanged, "
        f"{len(report.differing)} differing"
    )


@topics.command("list")
def topics_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print the catalogue as JSON.")] = False,
) -> None:
    """Print the topic catalogue (names without any CARELOOP_TOPIC_PREFIX)."""
    from careloop_contracts import topic_catalogue

    catalogue = topic_catalogue()
    if as_json:
        rows = [
            {
                "name": spec.name,
                "partitions": spec.partitions,
                "retention_ms": spec.retention_ms,
                "cleanup_policy": spec.cleanup_policy,
                "owner": spec.owner,
            }
            for spec in catalogue.values()
        ]
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"Topic catalogue ({len(catalogue)})")
    for column in ("topic", "partitions", "retention", "cleanup", "owner"):
        table.add_column(column, overflow="fold")
    for spec in catalogue.values():
        retention = "forever" if spec.retention_ms < 0 else f"{spec.retention_ms // 86_400_000} d"
        table.add_row(spec.name, str(spec.partitions), retention, spec.cleanup_policy, spec.owner)
    console.print(table)


def _stores_phi(name: str) -> bool:
    """A service that seals fields through the kit's port ships a `rewrap` module."""
    import importlib.util

    return importlib.util.find_spec(f"{service(name).package}.rewrap") is not None


def _rewrap_one(name: str, batch_size: int) -> bool:
    """Rewrap one service's data keys with a progress bar; False if rows changed meanwhile."""
    from rich.progress import Progress

    entry = service(name)
    settings = load_settings(name, entry.settings_class())
    with Progress(console=console) as progress:
        task = progress.add_task(f"{name}: rewrapping data keys", total=None)

        def advance(done: int, to_do: int) -> None:
            progress.update(task, completed=done, total=to_do)

        report = asyncio.run(
            entry.module("rewrap").rewrap(settings, batch_size=batch_size, on_batch=advance)
        )
    resealed = f", {report.resealed} moved onto data keys" if report.resealed else ""
    console.print(
        f"{name}: {report.key_name} v{report.latest_version}: {report.rewrapped} rewrapped, "
        f"{report.already_latest} already current, {report.changed_meanwhile} changed "
        f"meanwhile (run again), {report.total} in all{resealed}"
    )
    return not report.changed_meanwhile


@keys.command("rewrap")
def keys_rewrap(
    name: Annotated[str | None, typer.Argument(help="The service whose keys to rewrap.")] = None,
    all_services: Annotated[
        bool, typer.Option("--all", help="Every service that stores PHI.")
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Data keys per transaction.")] = 200,
) -> None:
    """Rewrap every stored data key of a service under its transit key's latest version
    (run after `transit/keys/<key>/rotate`; no plaintext leaves Vault; safe to re-run)."""
    if (name is None) == (not all_services):
        raise typer.BadParameter("name one service or pass --all")
    names = [n for n in SERVICES if _stores_phi(n)] if all_services else [name or ""]
    for one in names:
        if not _stores_phi(one):
            raise typer.BadParameter(f"{one} stores no sealed fields")
    results = [_rewrap_one(one, batch_size) for one in names]
    if not all(results):
        raise typer.Exit(1)


@keys.command("reindex")
def keys_reindex(
    name: Annotated[str, typer.Argument(help="The service whose blind indexes to rebuild.")],
    batch_size: Annotated[int, typer.Option(help="Records per transaction.")] = 200,
) -> None:
    """Recompute every blind-index token still under an older key version (run after
    writing a new key version with `previous_key`; safe to re-run). When it reports no
    rows left, remove `previous_key` from the secret and restart the service."""
    from rich.progress import Progress

    entry = service(name)
    module = entry.module("rewrap") if _stores_phi(name) else None
    if module is None or not hasattr(module, "reindex"):
        raise typer.BadParameter(f"{name} keeps no versioned blind indexes")
    settings = load_settings(name, entry.settings_class())
    with Progress(console=console) as progress:
        task = progress.add_task(f"{name}: re-indexing", total=None)

        def advance(done: int, to_do: int) -> None:
            progress.update(task, completed=done, total=to_do)

        report = asyncio.run(module.reindex(settings, batch_size=batch_size, on_batch=advance))
    console.print(
        f"{name}: blind index v{report.version}: {report.reindexed} re-indexed, "
        f"{report.left} rows left under older versions"
    )
    if report.left:
        raise typer.Exit(1)


@keys.command("rewrap-phi")
def keys_rewrap_phi() -> None:
    """Same as `careloop keys rewrap patients` (the name of the first runbooks)."""
    if not _rewrap_one("patients", 200):
        raise typer.Exit(1)


@vault.command("bootstrap")
def vault_bootstrap(
    token_dir: Annotated[
        Path | None,
        typer.Option(help="Write one token per service to DIR/<service>/vault-token."),
    ] = None,
    unseal_state: Annotated[
        Path | None,
        typer.Option(
            help="Local development only: initialise and unseal a new OpenBao, keeping its "
            "unseal key and root token in this directory."
        ),
    ] = None,
    root_token_file: Annotated[
        Path | None, typer.Option(help="File holding a root or admin token.")
    ] = None,
    wait_s: Annotated[float, typer.Option(help="How long to wait for Vault to answer.")] = 60,
) -> None:
    """Engines, keys, secrets and per-service policies in Vault (idempotent: existing keys
    are never replaced); with --token-dir, a fresh periodic token per service."""
    import hvac

    from careloop_cli.vaultsetup import (
        resolve_root_token,
        wait_for_vault,
        wait_until_active,
        write_tokens,
    )
    from careloop_kit.infra.openbao import bootstrap_vault

    settings = load_settings("vault", KitSettings)
    client = hvac.Client(url=settings.vault_addr, verify=settings.vault_ca_cert or True)
    status = wait_for_vault(client, wait_s, console.print)
    root_token = resolve_root_token(client, status, unseal_state, root_token_file, console.print)
    wait_until_active(client, wait_s)
    tokens = bootstrap_vault(
        settings.vault_addr, root_token, list(SERVICES), ca_cert=settings.vault_ca_cert
    )
    console.print(f"engines, keys and policies ready for {', '.join(SERVICES)}")
    if token_dir is not None:
        for path in write_tokens(token_dir, tokens):
            console.print(f"wrote {path}")


@caregaps.command("evaluate")
def caregaps_evaluate(
    location: Annotated[
        str | None, typer.Option("--location", help="Only the patients of this location id.")
    ] = None,
    gateway: Annotated[
        str, typer.Option(envvar="CARELOOP_GATEWAY_URL", help="The gateway's base URL.")
    ] = "http://127.0.0.1:8100",
    token: Annotated[
        str | None,
        typer.Option(
            envvar="CARELOOP_ACCESS_TOKEN",
            help="An access token with caregaps:manage (prefer the variable: a command "
            "line is visible to other users of the machine).",
            show_default=False,
        ),
    ] = None,
    poll_interval: Annotated[float, typer.Option(help="Seconds between two looks.")] = 1.0,
    timeout: Annotated[float, typer.Option(help="Seconds to follow the job at most.")] = 3600,
) -> None:
    """Re-evaluate every patient's care gaps (or one location's) against the current
    measure library, with a progress bar; exits 1 if the evaluation fails."""
    import httpx
    from rich.progress import Progress

    from careloop_cli.caregaps import (
        EvaluationError,
        JobStatus,
        follow_evaluation,
        start_evaluation,
    )

    if not token:
        raise typer.BadParameter(
            "an access token is needed: set CARELOOP_ACCESS_TOKEN or pass --token",
            param_hint="--token",
        )
    headers = {"Authorization": f"Bearer {token}"}
    ca_file = os.environ.get("CARELOOP_INTERNAL_CA_FILE")
    with httpx.Client(
        base_url=gateway.rstrip("/"), headers=headers, timeout=30, verify=_verify(ca_file)
    ) as client:
        try:
            job_id = start_evaluation(client, location)
            with Progress(console=console) as progress:
                bar = progress.add_task(f"care gaps: evaluation {job_id}", total=None)

                def show(status: JobStatus) -> None:
                    progress.update(
                        bar,
                        completed=status.done,
                        total=status.total,
                        description=f"care gaps: evaluation {job_id} {status.status}",
                    )

                final = follow_evaluation(
                    client, job_id, on_status=show, poll_interval_s=poll_interval, timeout_s=timeout
                )
        except EvaluationError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
    changed = f", {final.changed} gap(s) changed" if final.changed is not None else ""
    console.print(f"evaluation {job_id} done: {final.done} of {final.total} patients{changed}")


@dev.command("certs")
def dev_certs(
    out: Annotated[Path, typer.Option(help="Directory for the CA and host certificates.")],
    host: Annotated[list[str], typer.Option(help="A host name to issue a certificate for.")],
) -> None:
    """Local development only: a CA and a TLS certificate per host (kept if they exist)."""
    from careloop_cli.certs import issue_local_certificates

    issued = issue_local_certificates(out, host)
    console.print(f"{len(issued.created)} file(s) created, {len(issued.kept)} kept in {out}")


def _verify(ca_file: str | None) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=ca_file) if ca_file else True


@app.command("probe")
def probe(
    url: Annotated[str, typer.Argument(help="URL to GET, e.g. http://127.0.0.1:8101/readyz")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 3,
) -> None:
    """Exit 0 when URL answers 200 (container health checks: the image has no curl).
    An https URL is verified against CARELOOP_INTERNAL_CA_FILE when that is set."""
    import httpx

    ca_file = os.environ.get("CARELOOP_INTERNAL_CA_FILE")
    try:
        status = httpx.get(url, timeout=timeout, verify=_verify(ca_file)).status_code
    except httpx.HTTPError as exc:
        console.print(f"{url}: {type(exc).__name__}")
        raise typer.Exit(1) from None
    if status != 200:
        console.print(f"{url}: HTTP {status}")
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
