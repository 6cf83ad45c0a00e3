"""`careloop dev up` (what `make run` runs): up, use, down cleanly, and up again with the data."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from careloop_cli.registry import SERVICES
from careloop_contracts import topic_catalogue
from careloop_kit.infra.ports import port_is_open
from careloop_kit.testing.kafka import wait_for_records

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
# Sign-ins hash passwords with argon2id: seconds each on a busy two-core runner.
HTTP_TIMEOUT_S = 60


def _get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, timeout=HTTP_TIMEOUT_S, **kwargs)


def _post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, timeout=HTTP_TIMEOUT_S, **kwargs)


def _free_block(size: int) -> int:
    """A base port with `size` consecutive free ports, below the ephemeral range
    (a port the kernel hands to an outgoing connection cannot be reserved ahead)."""
    for _ in range(200):
        base = random.randrange(20000, 30000 - size)
        try:
            for port in range(base, base + size):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no block of free ports found")


@pytest.fixture
def stack_env() -> Iterator[dict[str, str]]:
    # Not pytest's tmp_path: PostgreSQL runs as its own system user and needs to traverse it.
    state = Path(tempfile.mkdtemp(prefix="careloop-devstack-"))
    state.chmod(0o755)
    # One port per registered service from base, then Kafka, its controller, OpenBao
    # and its cluster port.
    services = len(SERVICES)
    base = _free_block(services + 4)
    env = {
        **os.environ,
        "CARELOOP_STATE_DIR": str(state),
        "CARELOOP_DEV_KAFKA_PORT": str(base + services),
        "CARELOOP_DEV_KAFKA_CONTROLLER_PORT": str(base + services + 1),
        "CARELOOP_DEV_OPENBAO_PORT": str(base + services + 2),
        "CARELOOP_DEV_SERVICE_PORT_BASE": str(base),
        # Six services importing at once on a busy two-core runner can take minutes.
        "CARELOOP_DEV_READY_TIMEOUT_S": "300",
    }
    yield env
    shutil.rmtree(state, ignore_errors=True)


class StackProcess:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.state = Path(env["CARELOOP_STATE_DIR"])
        self.log = (self.state / "devstack.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "careloop_cli.main", "dev", "up"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_endpoints(self, timeout_s: float = 420) -> dict:
        path = self.state / "endpoints.json"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"dev up exited early:\n{self.tail()}")
            if path.exists():
                return json.loads(path.read_text())
            time.sleep(0.5)
        raise AssertionError(f"no endpoints.json after {timeout_s}s:\n{self.tail()}")

    def stop(self, timeout_s: float = 180) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"dev up still stopping after {timeout_s}s:\n{self.tail()}"
            ) from exc
        finally:
            if self.process.poll() is None:
                # Its servers would outlive it: they are not tied to its life like services.
                for child in _children(self.process.pid):
                    child.kill()
                self.process.kill()
            self.log.close()

    def tail(self) -> str:
        return (self.state / "devstack.log").read_text(errors="replace")[-4000:]


def _subject(headers: dict[str, str]) -> str:
    """The `sub` claim of a bearer token (read without verifying: the services did)."""
    payload = headers["Authorization"].split()[1].split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])


def _topics(bootstrap: str) -> set[str]:
    async def listed() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(listed())


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _wait_for_trail(
    audit_url: str, patient_id: str, action: str, headers: dict[str, str]
) -> list[dict]:
    deadline = time.monotonic() + 30
    items: list[dict] = []
    while time.monotonic() < deadline:
        response = _get(f"{audit_url}/audit/patients/{patient_id}/trail", headers=headers)
        items = response.json().get("items", []) if response.status_code == 200 else []
        if any(i.get("action") == action for i in items):
            return items
        time.sleep(0.5)
    raise AssertionError(f"{action} of {patient_id} not in the audit trail: {items}")


def _sign_in(gateway_url: str, logins: dict, role: str) -> dict[str, str]:
    """Headers of a demo user signed in through the gateway."""
    user = next(u for u in logins["users"] if u["role"] == role)
    response = _post(
        f"{gateway_url}/api/v1/identity/auth/login",
        json={"org_id": logins["org_id"], "email": user["email"], "password": user["password"]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "Bearer"
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def readme_journey() -> str:
    """The fenced bash blocks of the README's "Try it" section, as a reader pastes them."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Try it\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```bash\n(.*?)^```", section, flags=re.DOTALL | re.MULTILINE)
    assert blocks, "no bash block in the README's Try it section"
    return "\n".join(blocks)


def _schedule(gateway_url: str, headers: dict[str, str]) -> dict[str, int]:
    """How many providers, visit types and weekly windows scheduling holds."""
    api = f"{gateway_url}/api/v1/scheduling"
    providers = _get(f"{api}/providers", headers=headers)
    assert providers.status_code == 200, providers.text
    types = _get(f"{api}/appointment-types", headers=headers)
    assert types.status_code == 200, types.text
    windows = 0
    for provider in providers.json()["items"]:
        schedule = _get(f"{api}/providers/{provider['id']}/availability", headers=headers)
        assert schedule.status_code == 200, schedule.text
        windows += len(schedule.json()["windows"])
    return {
        "providers": providers.json()["count"],
        "visit_types": types.json()["count"],
        "windows": windows,
    }


def _follow_the_readme(stack: StackProcess, gateway_url: str, logins: dict) -> None:
    """Run the README's journey with bash against the stack: sign in, register, find a
    slot, book; the booking's confirmation must be in messaging's delivery log."""
    run = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", readme_journey()],
        cwd=REPO,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    patient_id = re.search(r"^registered patient (\S+)$", run.stdout, re.MULTILINE)
    appointment_id = re.search(r"^booked appointment (\S+)$", run.stdout, re.MULTILINE)
    assert patient_id, run.stdout
    assert appointment_id, run.stdout
    desk = _sign_in(gateway_url, logins, "front_desk")
    patient = _get(f"{gateway_url}/api/v1/patients/patients/{patient_id[1]}", headers=desk)
    assert patient.status_code == 200, patient.text
    assert patient.json()["name"] == {"family": "Example", "given": ["Sam"]}
    booked = _get(f"{gateway_url}/api/v1/scheduling/appointments/{appointment_id[1]}", headers=desk)
    assert booked.status_code == 200, booked.text
    assert booked.json()["status"] == "booked"
    assert booked.json()["patient_id"] == patient_id[1]
    # Messaging's own event names the message sent for this appointment's confirmation.
    endpoints = json.loads((stack.state / "endpoints.json").read_text())

    def confirmation_sent(records: list) -> bool:
        return any(_is_confirmation(r.value, appointment_id[1]) for r in records)

    records = asyncio.run(
        wait_for_records(
            endpoints["kafka"]["bootstrap"], "careloop.messaging", confirmation_sent, timeout_s=60
        )
    )
    (message_id,) = {
        json.loads(r.value)["message_id"]
        for r in records
        if _is_confirmation(r.value, appointment_id[1])
    }
    line = f"delivery_mode=log: sms message {message_id} recorded as sent"
    assert line in (stack.state / "logs" / "messaging.log").read_text()
    # The README's last command showed the reader that very line.
    assert line in run.stdout.strip().splitlines()[-1]


def _is_confirmation(value: bytes | None, appointment_id: str) -> bool:
    event = json.loads(value) if value else {}
    return (
        event.get("appointment_id") == appointment_id
        and event.get("status") == "sent"
        and str(event.get("touch_key", "")).endswith(":confirmation")
    )


# Two cold starts of the whole platform and the README's journey: minutes on a busy runner.
@pytest.mark.timeout(1500)
def test_dev_up_serves_audits_stops_cleanly_and_keeps_data(stack_env: dict[str, str]) -> None:
    first = StackProcess(stack_env)
    try:
        endpoints = first.wait_endpoints()
        gateway_url = endpoints["services"]["gateway"]["url"]
        # The topic catalogue, dead-letter topics included, as compose and Helm create it.
        assert set(topic_catalogue()) <= _topics(endpoints["kafka"]["bootstrap"])
        logins = json.loads((first.state / "demo-logins.json").read_text())
        assert {u["role"] for u in logins["users"]} >= {"org_admin", "front_desk", "auditor"}
        assert len(logins["patient_ids"]) == 3
        desk = _sign_in(gateway_url, logins, "front_desk")
        auditor = _sign_in(gateway_url, logins, "auditor")
        home = next(u for u in logins["users"] if u["role"] == "front_desk")["locations"][0]
        # Through the gateway, as a practice's integration would.
        registered = _post(
            f"{gateway_url}/api/v1/patients/patients",
            json={
                "location_id": home,
                "name": {"family": "Synthetic", "given": ["Devstack"]},
                "birth_date": "1970-01-01",
            },
            headers=desk,
        )
        assert registered.status_code == 201, registered.text
        patient_id = registered.json()["id"]
        anonymous = _get(f"{gateway_url}/api/v1/patients/patients/{patient_id}")
        assert anonymous.status_code == 401

        trail = _wait_for_trail(gateway_url + "/api/v1/audit", patient_id, "create", auditor)

        # The registration is the front desk's; care gaps' read of the demographics (its
        # own service identity) may already be in the trail beside it.
        (created,) = [
            r for r in trail if (r["action"], r["resource_type"]) == ("create", "Patient")
        ]
        assert created["actor_id"] == _subject(desk)
        # The demo partner client: client credentials through the gateway, then a read
        # that shows only what its scope and BAA allow, within its own rate limit.
        (partner,) = logins["partner_clients"]
        issued = _post(
            f"{gateway_url}/api/v1/identity/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(partner["client_id"], partner["client_secret"]),
        )
        assert issued.status_code == 200, issued.text
        assert "patients:read" in issued.json()["scope"].split()
        as_partner = {"Authorization": f"Bearer {issued.json()['access_token']}"}
        read = _get(f"{gateway_url}/api/v1/patients/patients/{patient_id}", headers=as_partner)
        assert read.status_code == 200, read.text
        assert read.json()["name"]["given"] == ["Devstack"]
        assert "preferences" in read.json()["withheld_categories"]
        merge = _post(
            f"{gateway_url}/api/v1/patients/patients/{patient_id}/merge",
            json={"merged_patient_id": logins["patient_ids"][0], "version": 1},
            headers=as_partner,
        )
        assert merge.status_code == 403, merge.text
        seeded = _schedule(gateway_url, desk)
        # Four synthetic providers in three locations, three visit types, weekday hours.
        assert seeded == {"providers": 4, "visit_types": 3, "windows": 4 * 5 * 2}
        _follow_the_readme(first, gateway_url, logins)
        spawned = _children(first.process.pid)
        assert spawned, "dev up should run services and servers as child processes"
    finally:
        code = first.stop()
    assert code == 0, first.tail()
    time.sleep(1)
    survivors = [p for p in spawned if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert survivors == [], f"orphans after Ctrl-C: {survivors}"
    used = [int(stack_env[k]) for k in ("CARELOOP_DEV_KAFKA_PORT", "CARELOOP_DEV_OPENBAO_PORT")] + [
        int(stack_env["CARELOOP_DEV_SERVICE_PORT_BASE"]) + i for i in range(4)
    ]
    assert [p for p in used if port_is_open(p)] == []
    assert not (Path(stack_env["CARELOOP_STATE_DIR"]) / "endpoints.json").exists()

    second = StackProcess(stack_env)
    try:
        endpoints = second.wait_endpoints()
        gateway_url = endpoints["services"]["gateway"]["url"]
        desk = _sign_in(gateway_url, logins, "front_desk")
        again = _get(f"{gateway_url}/api/v1/patients/patients/{patient_id}", headers=desk)
        assert again.status_code == 200, again.text
        assert again.json()["name"]["given"] == ["Devstack"]
        auditor = _sign_in(gateway_url, logins, "auditor")
        _wait_for_trail(gateway_url + "/api/v1/audit", patient_id, "read", auditor)
        # The schedule is seeded again on every start, and finds nothing to add.
        assert _schedule(gateway_url, desk) == seeded
        assert "(0 added this time)" in (second.state / "devstack.log").read_text()
    finally:
        assert second.stop() == 0, second.tail()
