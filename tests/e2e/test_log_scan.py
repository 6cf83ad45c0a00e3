"""The log scan that runs over the whole e2e session (conftest.py) finds what it must:
a registered PHI value in a log line or in a `careloop` subprocess' output, whatever
the phone's format, and only that."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest

from careloop_kit.telemetry import REDACTED, redact

from .conftest import LogScan

pytestmark = pytest.mark.e2e

log = logging.getLogger("careloop.e2e.logscan")


def _patient() -> dict[str, Any]:
    """Synthetic PHI of its own: a planted value must be one no other test registers."""
    marker = uuid.uuid4().hex[:8]
    digits = f"555{random.randint(1_000_000, 9_999_999)}"
    born = date(1930, 1, 1) + timedelta(days=random.randint(0, 25_000))
    return {
        "name": {"family": f"Plantfam{marker}", "given": [f"Plantgiv{marker}"]},
        "birth_date": born.isoformat(),
        "phones": [f"+1 ({digits[:3]}) {digits[3:6]}-{digits[6:]}"],
        "emails": [f"plant{marker}@example.org"],
        "address": {"line": [f"{marker} Quarry Lane"], "city": f"Plantville{marker}"},
    }


def _digits(phone: str) -> str:
    return "".join(ch for ch in phone if ch.isdigit())[-10:]


@pytest.fixture
def scan() -> Iterator[LogScan]:
    """A scan of its own, active for this test only (the session's keeps running)."""
    own = LogScan(commands=("careloop_cli.main", "-c"))
    own.install()
    own.active = True
    try:
        yield own
    finally:
        own.active = False
        own.uninstall()


def test_a_planted_log_line_with_a_registered_value_is_reported(scan: LogScan) -> None:
    patient = _patient()
    scan.registry.add_body(patient)
    family, email = patient["name"]["family"], patient["emails"][0]
    phone, digits = patient["phones"][0], _digits(patient["phones"][0])
    born = date.fromisoformat(patient["birth_date"]).strftime("%m/%d/%Y")

    log.warning("reminder queued for appointment a-1")
    log.warning("contact of %s is %s", family.upper(), email)
    log.warning("texting %s.%s.%s now", digits[:3], digits[3:6], digits[6:])
    log.warning("born %s", born)

    leaks = scan.leaks()
    assert sorted((leak.kind, leak.value) for leak in leaks) == sorted(
        [
            ("name", family.lower()),
            ("email", email.lower()),
            ("phone", phone),
            ("birth_date", born),
        ]
    )
    assert all(leak.source == "log" for leak in leaks)
    # Lines are formatted as production formats them: JSON with the logger's name.
    assert all('"logger": "careloop.e2e.logscan"' in leak.line for leak in leaks)


def test_phones_are_compared_by_their_digits_and_names_as_whole_words(scan: LogScan) -> None:
    digits = _digits(_patient()["phones"][0])
    area, exchange, line = digits[:3], digits[3:6], digits[6:]
    scan.registry.add_body({"name": {"family": "Trace", "given": ["Ada"]}, "phones": [digits]})

    for text in [
        digits,
        f"+1 {area} {exchange} {line}",
        f"({area}) {exchange}-{line}",
        f"tel:%2B1-{area}-{exchange}-{line}",
        "Trace",
        "from ada.",
    ]:
        assert scan.registry.find("log", text), text
    for text in [
        f"{area}{exchange}{int(line) ^ 1:04d}",
        "Traceback (most recent call last):",
        '{"trace_id": "4bf92f35", "level": "INFO"}',
        "Adam and Canada",
        "2026-12-07 00:37:19,637",
    ]:
        assert scan.registry.find("log", text) == [], text


def test_only_what_a_line_carries_is_scanned_not_the_fields_the_set_up_fills(
    scan: LogScan,
) -> None:
    marker = uuid.uuid4().hex[:8]
    family, given = f"Fieldfam{marker}", f"Tracer{marker}"
    scan.registry.add_body({"name": {"family": family, "given": [given]}})

    logging.getLogger(f"opentelemetry.sdk.{given.lower()}.export").warning("Processor is shut")
    logging.getLogger("mail.log").warning(f"recip: {given}@example.org")
    logging.getLogger(f"careloop.e2e.logscan.{given}").warning(f"patient {family}")

    assert [(leak.kind, leak.value) for leak in scan.leaks()] == [("name", family.lower())]
    assert not any("mail.log" in line for _, line in scan.lines)


def test_the_production_redaction_keeps_a_searched_phone_out_of_the_kept_line(
    scan: LogScan,
) -> None:
    digits = _digits(_patient()["phones"][0])
    scan.registry.add_body({"phones": [digits]})

    log.warning(f'HTTP Request: GET http://patients/patients?phone={digits} "HTTP/1.1 200 OK"')

    kept = [line for source, line in scan.lines if "HTTP Request" in line]
    assert len(kept) == 1
    assert "/patients?[redacted]" in kept[0]
    assert scan.leaks() == []


@pytest.mark.parametrize(
    ("line", "kept", "gone"),
    [
        (
            'HTTP Request: GET http://10.0.0.5:8101/patients?phone=5550100 "HTTP/1.1 200 OK"',
            "http://10.0.0.5:8101/patients?",
            "5550100",
        ),
        ('127.0.0.1:5000 - "GET /patients?email=a%40b.org HTTP/1.1" 200', "/patients?", "a%40b"),
        ("postgresql+asyncpg://careloop:s3cret@db:5432/patients", "careloop:", "s3cret"),
        ("{'authorization': 'Bearer abc.def', 'host': 'x'}", "'host': 'x'", "abc.def"),
        ("(b'cookie', b'sid=42; theme=dark')", "b'cookie'", "sid=42"),
        ("X-Twilio-Signature: AbCd0123+/=", "X-Twilio-Signature", "AbCd0123"),
        ("token eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl seen", "seen", "eyJzdWIi"),
        ("vault said hvs.CAESIJ0abcdefghijklmnop", "vault said", "CAESIJ0"),
    ],
)
def test_the_redaction_keeps_the_line_and_drops_queries_and_credentials(
    line: str, kept: str, gone: str
) -> None:
    redacted = redact(line)

    assert kept in redacted
    assert gone not in redacted
    assert REDACTED in redacted


def test_ordinary_lines_pass_the_redaction_unchanged() -> None:
    for line in [
        "signed audit checkpoint at size 12",
        "authorization failed for patients:read",
        "is /readyz ok? yes",
        "reply r-1: appointment a-2 already confirmed",
    ]:
        assert redact(line) == line


def test_what_a_watched_subprocess_writes_to_its_pipes_is_scanned(scan: LogScan) -> None:
    patient = _patient()
    scan.registry.add_body(patient)
    email = patient["emails"][0]
    city = patient["address"]["city"]

    ran = subprocess.run(
        [sys.executable, "-c", f"import sys; print({email!r}); print('ok', file=sys.stderr)"],
        capture_output=True,
        text=True,
        check=True,
    )
    server = subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.stderr.write({city!r})"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    server.wait(timeout=30)
    unwatched = subprocess.run(
        [sys.executable, "-I", "-u", "-c", f"print({email!r})"], capture_output=True, check=True
    )

    assert ran.stdout.strip() == email
    assert unwatched.stdout
    leaks = scan.leaks()
    assert sorted(leak.kind for leak in leaks) == ["address", "email"]
    assert all(leak.source.startswith("subprocess ") for leak in leaks)


async def test_every_patient_the_service_writes_is_registered_and_none_is_logged(
    scan: LogScan, slice_apps: Any
) -> None:
    patient = _patient()
    created = await slice_apps.patients.post("/patients", json=patient, headers=slice_apps.org)
    assert created.status_code == 201, created.text
    found = await slice_apps.patients.post(
        "/patients/_search", json={"phone": patient["phones"][0]}, headers=slice_apps.org
    )
    assert created.json()["id"] in [p["id"] for p in found.json()["items"]]
    await slice_apps.wait_for_trail(created.json()["id"], expected=2)

    assert scan.registry.patients == 1
    assert patient["name"]["family"].lower() in scan.registry.texts
    assert _digits(patient["phones"][0]) in scan.registry.phones
    assert scan.lines, "the services' log records are kept"
    assert scan.leaks() == []
