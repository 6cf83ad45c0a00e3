"""Contacts read ahead for a consumer batch: once per patient, a bounded number at a
time, only for the touches read ahead, failures left to the handler's own read, nothing
carried into the next batch."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from careloop_messaging.domain.outreach import ContactData
from careloop_messaging.domain.templates import Channel
from careloop_messaging.patients_client import BatchContacts, PatientsUnavailable

pytestmark = pytest.mark.unit


def contact(phone: str) -> ContactData:
    return ContactData([phone], [], [Channel.SMS], Channel.SMS, True, "en")


@dataclass
class GatedSource:
    """The patients port with reads that wait until the test opens the gate."""

    patients: dict[str, ContactData]
    down: set[str] = field(default_factory=set)
    reads: list[tuple[str, str]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    busy_at: int = 0
    busy: asyncio.Event = field(default_factory=asyncio.Event)

    async def contact(self, org_id: str, patient_id: str) -> ContactData | None:
        self.reads.append((org_id, patient_id))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.in_flight == self.busy_at:
            self.busy.set()
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1
        if patient_id in self.down:
            raise PatientsUnavailable("patients answered 503")
        return self.patients.get(patient_id)


async def test_each_patient_is_read_once_with_bounded_concurrency() -> None:
    source = GatedSource({f"p{i}": contact(f"+1555000{i:04d}") for i in range(10)}, busy_at=3)
    batch = BatchContacts(source, concurrency=3)
    touches = [(f"t{i}", "org-1", f"p{i % 10}") for i in range(40)]

    loading = asyncio.create_task(batch.load(touches))
    await asyncio.wait_for(source.busy.wait(), timeout=5)
    # The gate is closed: three reads started and the fourth waits for a free slot.
    assert len(source.reads) == 3
    source.gate.set()
    await loading

    assert sorted(source.reads) == sorted({("org-1", f"p{i}") for i in range(10)})
    assert source.most_in_flight == 3
    assert await batch.contact("t17", "org-1", "p7") == contact("+15550000007")
    assert await batch.contact("t27", "org-1", "p7") == contact("+15550000007")
    assert len(source.reads) == 10
    assert batch.reads == 10


async def test_an_unknown_patient_is_remembered_as_unknown() -> None:
    source = GatedSource({})
    source.gate.set()
    batch = BatchContacts(source, concurrency=2)

    await batch.load([("t1", "org-1", "nobody")])

    assert await batch.contact("t1", "org-1", "nobody") is None
    assert source.reads == [("org-1", "nobody")]


async def test_a_failed_read_ahead_is_read_again_on_demand() -> None:
    source = GatedSource({"p1": contact("+15550000001"), "p2": contact("+15550000002")})
    source.down = {"p2"}
    source.gate.set()
    batch = BatchContacts(source, concurrency=2)

    await batch.load([("t1", "org-1", "p1"), ("t2", "org-1", "p2")])
    source.down = set()

    assert await batch.contact("t2", "org-1", "p2") == contact("+15550000002")
    assert source.reads.count(("org-1", "p2")) == 2
    source.down = {"p2"}
    # Still not read ahead: a failure now is the handler's, for the kit to retry.
    with pytest.raises(PatientsUnavailable):
        await batch.contact("t2", "org-1", "p2")


async def test_a_touch_not_read_ahead_gets_a_fresh_read() -> None:
    source = GatedSource({"p1": contact("+15550000001")})
    source.gate.set()
    batch = BatchContacts(source, concurrency=2)
    await batch.load([("reminder", "org-1", "p1")])
    source.patients["p1"] = contact("+15550000099")

    # Another event type of the same batch, for the same patient, was not prepared.
    assert await batch.contact("waitlist", "org-1", "p1") == contact("+15550000099")
    # Nor does a touch key answer for another patient.
    assert await batch.contact("reminder", "org-1", "p2") is None
    assert source.reads == [("org-1", "p1"), ("org-1", "p1"), ("org-1", "p2")]


async def test_the_next_batch_never_sees_the_previous_batch_contacts() -> None:
    source = GatedSource({"p1": contact("+15550000001")})
    source.gate.set()
    batch = BatchContacts(source, concurrency=2)
    await batch.load([("t1", "org-1", "p1")])
    source.patients["p1"] = contact("+15550000099")

    await batch.load([])

    assert await batch.contact("t1", "org-1", "p1") == contact("+15550000099")
    await batch.load([("t2", "org-1", "p1")])
    batch.clear()
    assert await batch.contact("t2", "org-1", "p1") == contact("+15550000099")
    assert source.reads.count(("org-1", "p1")) == 4


def test_concurrency_must_allow_one_read() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BatchContacts(GatedSource({}), concurrency=0)
