"""Referrals from an uploaded packet: the documents are sealed at rest (content and file
name), listed on the referral, read back byte for byte by clinical roles only, and a
packet breaking a rule is refused whole."""

from __future__ import annotations

import base64

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from careloop_kit.testing.services import Mint
from careloop_referrals.domain.packet import InvalidPacket, PacketDocument, checked_packet
from careloop_referrals.settings import ReferralsSettings

from .test_referrals_api import VALID_NPIS, _directory_entry

PDF = b"%PDF-1.4\n% synthetic referral letter marker-PKT-51\n" + bytes(range(256)) * 8


@pytest.mark.unit
@pytest.mark.parametrize(
    ("documents", "complaint"),
    [
        ([], "at least one"),
        ([PacketDocument("application/pdf", b"x")] * 11, "at most 10"),
        ([PacketDocument("application/x-msdownload", b"MZ")], "a packet takes"),
        ([PacketDocument("application/pdf", b"")], "empty"),
        ([PacketDocument("application/pdf", b"x" * 2049)], "at most 2048"),
    ],
)
def test_a_packet_breaking_a_rule_is_refused(
    documents: list[PacketDocument], complaint: str
) -> None:
    with pytest.raises(InvalidPacket, match=complaint):
        checked_packet(documents, max_bytes=2048)


def _packet(referrer: str, *documents: dict[str, object]) -> dict[str, object]:
    return {
        "location_id": "loc-north",
        "patient_id": "pat-1",
        "direction": "inbound",
        "referring_provider_id": referrer,
        "documents": list(documents),
    }


@pytest.mark.service
async def test_a_packet_is_sealed_listed_and_read_back_by_clinical_roles(
    referrals: httpx.AsyncClient, mint: Mint, referrals_settings: ReferralsSettings
) -> None:
    referrer = await _directory_entry(referrals, mint(), VALID_NPIS[0])
    letter = {
        "content_type": "application/pdf",
        "filename": "letter-marker-PKT-52.pdf",
        "data": base64.b64encode(PDF).decode(),
    }
    note = {"content_type": "text/plain", "data": base64.b64encode(b"Synthetic note").decode()}
    created = await referrals.post(
        "/referrals/packets", json=_packet(referrer, letter, note), headers=mint()
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["stage"] == "received"
    listed = body["documents"]
    assert [(d["content_type"], d["size_bytes"], d["filename"]) for d in listed] == [
        ("application/pdf", len(PDF), "letter-marker-PKT-52.pdf"),
        ("text/plain", 14, None),
    ]
    rid, doc = body["id"], listed[0]["id"]

    read = await referrals.get(f"/referrals/{rid}/documents/{doc}", headers=mint())
    assert read.status_code == 200
    assert read.content == PDF
    assert read.headers["content-type"] == "application/pdf"
    assert read.headers["cache-control"] == "no-store"

    desk = mint(roles=["front_desk"], loc=["loc-north"], amr=["pwd"])
    summary = (await referrals.get(f"/referrals/{rid}", headers=desk)).json()
    assert [d["filename"] for d in summary["documents"]] == [None, None]
    refused = await referrals.get(f"/referrals/{rid}/documents/{doc}", headers=desk)
    assert refused.status_code == 403
    missing = await referrals.get(f"/referrals/{rid}/documents/nope", headers=mint())
    assert missing.status_code == 404

    engine = create_async_engine(referrals_settings.database_url.get_secret_value())
    try:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    text(
                        "SELECT content_ct, filename_ct FROM referral_document "
                        "WHERE referral_id = :id"
                    ),
                    {"id": rid},
                )
            ).all()
    finally:
        await engine.dispose()
    blobs = [bytes(b) for row in rows for b in row if b is not None]
    assert len(blobs) == 3
    assert all(b"marker-PKT-5" not in blob for blob in blobs)


@pytest.mark.service
async def test_a_packet_breaking_a_rule_stores_nothing(
    referrals: httpx.AsyncClient, mint: Mint
) -> None:
    referrer = await _directory_entry(referrals, mint(), VALID_NPIS[1])
    exe = {"content_type": "application/x-msdownload", "data": base64.b64encode(b"MZ").decode()}
    refused = await referrals.post(
        "/referrals/packets", json=_packet(referrer, exe), headers=mint()
    )
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "a packet takes" in refused.json()["detail"]
    bad = {"content_type": "application/pdf", "data": "not base64!"}
    assert (
        await referrals.post("/referrals/packets", json=_packet(referrer, bad), headers=mint())
    ).status_code == 422
    listed = (await referrals.get("/referrals", headers=mint())).json()
    assert listed["items"] == []
