"""The `careloop` command line."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from careloop_cli.envfiles import apply_env_file
from careloop_cli.registry import SERVICES, service
from careloop_kit.settings import KitSettings

app = typer.Typer(help="Careloop: run, operate and inspect the platform.", no_args_is_help=True)
dev = typer.Typer(help="The local stack on one machine.", no_args_is_help=True)
audit = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
dlq = typer.Typer(help="Dead-letter topics: inspect and replay.", no_args_is_help=True)
app.add_typer(dev, name="dev")
app.add_typer(audit, name="audit")
app.add_typer(dlq, name="dlq")
console = Console()

ServiceName = Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}")]


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
    apply_env_file(entry.name)
    settings = entry.settings_class()()
    application = entry.app_factory()(settings)
    uvicorn.run(
        application,
        host=settings.http_host,
        port=settings.http_port,
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
    apply_env_file(entry.name)
    settings = entry.settings_class()()
    upgrade(entry.migrations, settings.database_url.get_secret_value(), revision)
    console.print(f"{entry.name}: database at {revision}")


@audit.command("verify")
def audit_verify(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Verify the audit hash chain and its signed checkpoint; names the first bad record."""
    from careloop_audit.settings import AuditSettings
    from careloop_audit.verification import verify_trail

    apply_env_file("audit")
    report = asyncio.run(verify_trail(AuditSettings()))
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
    apply_env_file(service_name)
    return KitSettings()


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


if __name__ == "__main__":
    app()
