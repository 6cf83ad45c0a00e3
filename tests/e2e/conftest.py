"""Fixtures of the end-to-end tests, and the log scan that runs over all of them.

The log scan: while each e2e test runs (its fixtures' set-up and tear-down included),
every log record of the in-process services is formatted by a handler built exactly as
production's (`careloop_kit.telemetry.log_handler`, redaction included) and kept, and
so is every line a `careloop` subprocess (the CLI, `careloop serve`) writes to a pipe.
Every patient the tests write goes through the patients repository, where its PHI
values (names, birth date, phones, emails, address) are registered. At the end of the
session no kept line may hold any of them (phones compared by their digits, dates in
the usual spellings, percent-encoding undone); the session fails otherwise, and prints
how many lines and values were checked either way.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import httpx
import pytest

from careloop_audit.app import create_app as create_audit
from careloop_audit.settings import AuditSettings
from careloop_kit.auth.jwks import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import SystemClock
from careloop_kit.telemetry import log_handler
from careloop_kit.testing.apps import running_app
from careloop_kit.testing.services import ServiceSettingsFactory
from careloop_patients.app import create_app as create_patients
from careloop_patients.settings import PatientsSettings
from careloop_patients.store.repository import PatientRepository


@dataclass
class Slice:
    """The patients and audit services running together against the real infrastructure."""

    patients: httpx.AsyncClient
    audit: httpx.AsyncClient
    patients_settings: PatientsSettings
    audit_settings: AuditSettings
    org: dict[str, str]
    """Headers of an org-wide administrator (MFA done) of this test's organization."""
    auditor: dict[str, str]
    """Headers of an auditor of the same organization."""

    @property
    def patients_database(self) -> str:
        return urlsplit(self.patients_settings.database_url.get_secret_value()).path.lstrip("/")

    @property
    def audit_database(self) -> str:
        return urlsplit(self.audit_settings.database_url.get_secret_value()).path.lstrip("/")

    def cli_env(self, settings: AuditSettings | PatientsSettings) -> dict[str, str]:
        """Environment for running the `careloop` command against this slice."""
        return {
            **os.environ,
            # Keep the command away from a developer's local stack env files.
            "CARELOOP_STATE_DIR": tempfile.mkdtemp(prefix="careloop-cli-"),
            "CARELOOP_ENVIRONMENT": "test",
            "CARELOOP_DATABASE_URL": settings.database_url.get_secret_value(),
            "CARELOOP_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "CARELOOP_VAULT_ADDR": settings.vault_addr,
            "CARELOOP_VAULT_TOKEN": settings.vault_token.get_secret_value(),
            "CARELOOP_TOPIC_PREFIX": settings.topic_prefix,
            "CARELOOP_LOG_JSON": "false",
        }

    async def wait_for_trail(self, patient_id: str, *, expected: int) -> list[dict[str, object]]:
        import asyncio

        body: dict[str, list[dict[str, object]]] = {"items": []}
        for _ in range(150):
            response = await self.audit.get(
                f"/audit/patients/{patient_id}/trail", headers=self.auditor
            )
            if response.status_code == 200:
                body = response.json()
                if len(body["items"]) >= expected:
                    return body["items"]
            await asyncio.sleep(0.2)
        raise AssertionError(f"audit trail of {patient_id} incomplete: {body}")


@pytest.fixture
async def slice_apps(
    service_settings: ServiceSettingsFactory, topic_prefix: str, unique_id: str
) -> AsyncIterator[Slice]:
    patients_settings = await service_settings(
        PatientsSettings, "patients", topic_prefix=topic_prefix
    )
    audit_settings = await service_settings(
        AuditSettings, "audit", topic_prefix=topic_prefix, checkpoint_interval_s=0.5
    )
    issuer = TestTokenIssuer(SystemClock())
    org_id = f"org-{unique_id}"

    def headers(subject: str, role: str) -> dict[str, str]:
        token = issuer.mint(org=org_id, sub=subject, roles=[role], loc=["*"], amr=["pwd", "otp"])
        return {"Authorization": f"Bearer {token}"}

    jwks = StaticJwksSource(issuer.jwks_document())
    async with (
        running_app(create_patients(patients_settings, jwks=jwks)) as patients,
        running_app(create_audit(audit_settings, jwks=jwks)) as audit,
    ):
        yield Slice(
            patients,
            audit,
            patients_settings,
            audit_settings,
            headers("clerk-1", "org_admin"),
            headers("auditor-1", "auditor"),
        )


@pytest.fixture
def register(slice_apps: Slice) -> Callable[[dict[str, object]], Awaitable[str]]:
    async def go(body: dict[str, object]) -> str:
        response = await slice_apps.patients.post("/patients", json=body, headers=slice_apps.org)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    return go


# --- the log scan -------------------------------------------------------------------

_WORD_EDGE_BEFORE, _WORD_EDGE_AFTER = r"(?<!\w)", r"(?!\w)"
_SET_BY_THE_CODE = frozenset({"time", "level", "logger", "service", "trace_id", "span_id"})
"""Fields of a production log line that the logging set-up fills, never data: a given
name `Trace` is not leaked by the logger `opentelemetry.sdk.trace.export`."""
_NOT_OURS = ("mail.log",)
"""Loggers of the stand-ins for outside systems: aiosmtpd, the SMTP server the messaging
tests deliver to, logs each recipient as any mail server does. Not a Careloop log."""
_PHONE_RUN = re.compile(r"\+?\d[\d\s().\-]{5,}\d")
_MIN_TEXT, _MIN_PHONE_DIGITS = 3, 7
"""Shorter names (a given name `V1`) match version tags and words; they identify no one."""


@dataclass
class Leak:
    source: str
    kind: str
    value: str
    line: str


@dataclass
class PhiRegistry:
    """The PHI values the tests wrote, in the spellings a log line could show them."""

    texts: dict[str, str] = field(default_factory=dict)
    """Lower-cased value -> its kind (name, email, address, birth_date)."""
    phones: dict[str, str] = field(default_factory=dict)
    """National digits of each phone -> the phone as written."""
    patients: int = 0

    def add_text(self, kind: str, value: str | None) -> None:
        if value and len(value.strip()) >= _MIN_TEXT:
            self.texts.setdefault(value.strip().lower(), kind)

    def add_phone(self, phone: str) -> None:
        digits = re.sub(r"\D", "", phone)
        national = digits[-10:] if len(digits) > 10 else digits
        if len(national) >= _MIN_PHONE_DIGITS:
            self.phones.setdefault(national, phone)

    def add_birth_date(self, value: date | str) -> None:
        day = value if isinstance(value, date) else date.fromisoformat(value)
        for spelling in ("%Y-%m-%d", "%Y%m%d", "%m/%d/%Y", "%d/%m/%Y", "%d.%m.%Y"):
            self.add_text("birth_date", day.strftime(spelling))

    def add_patient(
        self,
        *,
        family: str | None = None,
        given: Iterable[str] = (),
        birth_date: date | str | None = None,
        phones: Iterable[str] = (),
        emails: Iterable[str] = (),
        address_parts: Iterable[str | None] = (),
    ) -> None:
        self.patients += 1
        self.add_text("name", family)
        for name in given:
            self.add_text("name", name)
        if birth_date is not None:
            self.add_birth_date(birth_date)
        for phone in phones:
            self.add_phone(phone)
        for email in emails:
            self.add_text("email", email)
        for part in address_parts:
            self.add_text("address", part)

    def add_details(self, details: Any) -> None:
        """Register a `PatientDetails` as the patients service stores it."""
        address = details.address
        self.add_patient(
            family=details.name.family,
            given=details.name.given,
            birth_date=details.birth_date,
            phones=details.phones,
            emails=details.emails,
            address_parts=()
            if address is None
            else [*address.line, address.city, address.state, address.postal_code],
        )

    def add_body(self, body: Mapping[str, Any]) -> None:
        """Register a registration body as the tests post it to `/patients`."""
        name: Mapping[str, Any] = body.get("name") or {}
        address: Mapping[str, Any] = body.get("address") or {}
        self.add_patient(
            family=name.get("family"),
            given=name.get("given") or (),
            birth_date=body.get("birth_date"),
            phones=body.get("phones") or (),
            emails=body.get("emails") or (),
            address_parts=[
                *(address.get("line") or ()),
                address.get("city"),
                address.get("state"),
                address.get("postal_code"),
            ],
        )

    @property
    def count(self) -> int:
        return len(self.texts) + len(self.phones)

    def find(self, source: str, line: str) -> list[Leak]:
        """The registered values `line` holds."""
        leaks: list[Leak] = []
        pattern = self._pattern()
        for variant in {line, unquote_plus(line)}:
            if pattern is not None:
                for match in pattern.finditer(variant):
                    value = match.group(0).lower()
                    leaks.append(Leak(source, self.texts[value], value, line))
            for run in _PHONE_RUN.findall(variant):
                digits = re.sub(r"\D", "", run)
                leaks += [
                    Leak(source, "phone", phone, line)
                    for national, phone in self.phones.items()
                    if national in digits
                ]
        return leaks

    def _pattern(self) -> re.Pattern[str] | None:
        if not self.texts:
            return None
        key = tuple(sorted(self.texts))
        if getattr(self, "_compiled_for", None) != key:
            # Longest first, so one value inside another reports the longer one.
            alternatives = "|".join(re.escape(v) for v in sorted(key, key=len, reverse=True))
            self._compiled = re.compile(
                f"{_WORD_EDGE_BEFORE}(?:{alternatives}){_WORD_EDGE_AFTER}", re.IGNORECASE
            )
            self._compiled_for = key
        return self._compiled


class _Lines(io.TextIOBase):
    """A text stream that keeps what is written to it, one entry per line."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        super().__init__()
        self._sink = sink

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self._sink(line)
        return len(text)


class _ScanHandler(logging.Handler):
    """Formats each record with the production handler while the scan is active."""

    def __init__(self, scan: LogScan) -> None:
        super().__init__()
        self._scan = scan
        self._production = log_handler(
            "e2e", json_logs=True, stream=_Lines(lambda line: scan.keep("log", line))
        )

    def handle(self, record: logging.LogRecord) -> bool:
        if not self._scan.active or record.name.startswith(_NOT_OURS):
            return False
        return self._production.handle(record)

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() delegates
        self._production.emit(record)


class LogScan:
    """Keeps every log line and subprocess output line while active; `leaks()` finds the
    registered PHI values in them."""

    def __init__(self, *, commands: tuple[str, ...] = ("careloop_cli.main", "careloop")) -> None:
        self.registry = PhiRegistry()
        self.lines: list[tuple[str, str]] = []
        self.active = False
        self._commands = commands
        self._handler = _ScanHandler(self)
        self._undo: list[Callable[[], None]] = []

    def keep(self, source: str, line: str) -> None:
        self.lines.append((source, line))

    def keep_output(self, source: str, output: str | bytes | None) -> None:
        if isinstance(output, bytes):
            output = output.decode(errors="replace")
        for line in (output or "").splitlines():
            if line.strip():
                self.keep(source, line)

    def watches(self, args: Any) -> bool:
        """Whether `args` runs one of the watched commands (a module or an executable)."""
        words = _argv(args)
        return bool(words) and (
            Path(words[0]).name in self._commands or any(w in self._commands for w in words[1:3])
        )

    def install(self) -> None:
        """Put the handler on the root logger, tee `careloop` subprocesses' pipes and
        register the PHI of every patient the patients repository writes."""
        root = logging.getLogger()
        root.addHandler(self._handler)
        self._undo.append(lambda: root.removeHandler(self._handler))
        previous_popen = subprocess.Popen
        subprocess.Popen = _teeing_popen(self, previous_popen)  # type: ignore[misc]
        self._undo.append(lambda: setattr(subprocess, "Popen", previous_popen))
        self._undo.append(_register_patients_written(self))

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    def leaks(self) -> list[Leak]:
        found = [
            Leak(leak.source, leak.kind, leak.value, line)
            for source, line in self.lines
            for leak in self.registry.find(source, _data_of(line))
        ]
        return list({(leak.source, leak.value, leak.line): leak for leak in found}.values())


def _data_of(line: str) -> str:
    """What of a kept line can carry data: a JSON log line without the fields the
    logging set-up fills; any other line whole."""
    try:
        fields = json.loads(line)
    except ValueError:
        return line
    if not isinstance(fields, dict):
        return line
    return "\n".join(str(v) for k, v in fields.items() if k not in _SET_BY_THE_CODE)


def _teeing_popen(scan: LogScan, base: type[subprocess.Popen[Any]]) -> type[Any]:
    class TeeingPopen(base):  # type: ignore[valid-type, misc]
        """Keeps what a watched command wrote to its pipes, once it is read or it exits.

        Scans nest (a test's own over the session's): each class keeps for its own scan,
        and what one level drains from a pipe is shared with the others."""

        def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
            super().__init__(args, *rest, **kwargs)
            self.__dict__.setdefault("_scan_watchers", [])
            self.__dict__.setdefault("_scan_drained", [])
            self.__dict__.setdefault("_scan_delivered", {})
            self.__dict__.setdefault("_scan_source", f"subprocess {_command_name(args)}")
            if scan.active and scan.watches(args):
                self._scan_watchers.append(scan)

        def communicate(self, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            out, err = super().communicate(*args, **kwargs)
            if scan in self._scan_watchers:
                scan.keep_output(self._scan_source, out)
                scan.keep_output(self._scan_source, err)
            return out, err

        def wait(self, *args: Any, **kwargs: Any) -> int:
            code: int = super().wait(*args, **kwargs)
            if self._scan_watchers:
                # A server the test only terminates: what it wrote waits in the pipe.
                for stream in (self.stdout, self.stderr):
                    if stream is not None and not stream.closed:
                        self._scan_drained.append(stream.read())
            if scan in self._scan_watchers:
                # wait() runs again on exit and inside communicate(): keep each output once.
                delivered = self._scan_delivered.get(id(scan), 0)
                for output in self._scan_drained[delivered:]:
                    scan.keep_output(self._scan_source, output)
                self._scan_delivered[id(scan)] = len(self._scan_drained)
            return code

    return TeeingPopen


def _argv(args: Any) -> list[str]:
    argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
    return [a.decode() if isinstance(a, bytes) else os.fspath(a) for a in argv]


def _command_name(args: Any) -> str:
    """`careloop serve audit`, or the program and its first argument."""
    words = _argv(args)
    if "careloop_cli.main" in words:
        words = ["careloop", *words[words.index("careloop_cli.main") + 1 :]]
        return " ".join(words[:3])
    return " ".join([Path(words[0]).name, *words[1:2]]) if words else "?"


def _register_patients_written(scan: LogScan) -> Callable[[], None]:
    """Register each patient's PHI as the repository writes it (before it is written, so a
    failing write that logs it is caught too)."""
    add, update = PatientRepository.add, PatientRepository.update

    async def watched_add(self: PatientRepository, **kwargs: Any) -> Any:
        if scan.active:
            scan.registry.add_details(kwargs["details"])
        return await add(self, **kwargs)

    async def watched_update(self: PatientRepository, *args: Any, **kwargs: Any) -> Any:
        if scan.active:
            scan.registry.add_details(kwargs["details"] if "details" in kwargs else args[1])
        return await update(self, *args, **kwargs)

    PatientRepository.add = watched_add  # type: ignore[method-assign]
    PatientRepository.update = watched_update  # type: ignore[method-assign]

    def undo() -> None:
        PatientRepository.add = add  # type: ignore[method-assign]
        PatientRepository.update = update  # type: ignore[method-assign]

    return undo


_SCAN = pytest.StashKey[LogScan]()


def pytest_configure(config: pytest.Config) -> None:
    scan = LogScan()
    scan.install()
    config.stash[_SCAN] = scan


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    # Called for the tests of this directory only: service tests elsewhere in the same
    # run may log what they like.
    scan = item.config.stash[_SCAN]
    scan.active = True
    try:
        return (yield)
    finally:
        scan.active = False


def _origin(leak: Leak) -> str:
    try:
        fields = json.loads(leak.line)
    except ValueError:
        return leak.source
    return f"logger {fields.get('logger')}" if isinstance(fields, dict) else leak.source


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Hand this process's scan to the run's report (`tests/conftest.py`), which prints
    one summary over every process and fails the run on a leak."""
    scan = session.config.stash.get(_SCAN, None)
    if scan is None:
        return
    scan.uninstall()
    if not scan.lines and not scan.registry.count:
        return  # this process ran no e2e test (an xdist controller, for one)
    sources = {source for source, _ in scan.lines}
    subprocess_lines = sum(1 for source, _ in scan.lines if source != "log")
    # One entry per value and place, so a noisy one cannot hide the others.
    grouped: dict[tuple[str, str, str], list[Leak]] = {}
    for leak in scan.leaks():
        grouped.setdefault((leak.kind, leak.value, _origin(leak)), []).append(leak)
    report = {
        "lines": len(scan.lines),
        "subprocess_lines": subprocess_lines,
        "commands": sorted(sources - {"log"}),
        "values": scan.registry.count,
        "patients": scan.registry.patients,
        "leaks": [
            f"PHI ({kind} {value!r}) in {origin}, {len(same)} lines, first: {same[0].line[:300]}"
            for (kind, value, origin), same in grouped.items()
        ],
    }
    # Registered by tests/conftest.py, which reports the scans of every process.
    session.config.pluginmanager.get_plugin("careloop-log-scan-report").add(report)
