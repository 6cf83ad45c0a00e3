"""The log's integrity rules, as the specification: hashing, Merkle roots, verification."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop_audit.domain.checkpoint import checkpoint_message
from careloop_audit.domain.fhir import to_audit_event
from careloop_audit.domain.hashing import (
    ZERO_HASH,
    MerkleAccumulator,
    chain_hash,
    leaf_hash,
    merkle_tree_hash,
    node_hash,
)
from careloop_audit.domain.record import RecordFields, canonical_json, format_instant
from careloop_audit.domain.verify import (
    AnchoredRoot,
    ChainHead,
    StoredRecordView,
    seal,
    verify_chain,
)

pytestmark = pytest.mark.unit

T0 = datetime(2030, 1, 1, 9, 30, tzinfo=UTC)


def fields(seq: int, **changes: object) -> RecordFields:
    base = RecordFields(
        seq=seq,
        audit_id=f"00000000-0000-4000-8000-{seq:012d}",
        event_id=f"evt-{seq}",
        org_id="org-1",
        actor_id=f"user-{seq % 3}",
        actor_type="user",
        action="read",
        outcome="success",
        outcome_detail=None,
        patient_id=f"pat-{seq % 4}",
        resource_type="Patient",
        resource_id=f"pat-{seq % 4}",
        phi_categories=("demographics", "contact"),
        purpose_of_use="TREAT",
        source_service="patients",
        source_ip="10.0.0.7",
        request_id=f"req-{seq}",
        query_fingerprint=None,
        occurred_at=T0 + timedelta(seconds=seq),
        recorded_at=T0 + timedelta(seconds=seq, microseconds=250),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def build_log(n: int) -> list[StoredRecordView]:
    records: list[StoredRecordView] = []
    previous = ZERO_HASH
    for seq in range(1, n + 1):
        record = seal(fields(seq), previous)
        records.append(record)
        previous = record.chain_hash
    return records


def anchor_of(records: list[StoredRecordView]) -> AnchoredRoot:
    return AnchoredRoot(len(records), merkle_tree_hash([r.leaf_hash for r in records]))


def head_of(records: list[StoredRecordView]) -> ChainHead:
    return ChainHead(len(records), records[-1].chain_hash if records else ZERO_HASH)


# -- canonical form and hashes


def test_canonical_json_is_rfc8785_sorted_and_compact() -> None:
    canonical = canonical_json(fields(1))
    assert canonical.startswith(b'{"action":"read","actor_id":"user-1","actor_type":"user"')
    assert b" " not in canonical
    assert b'"occurred_at":"2030-01-01T09:30:01.000000Z"' in canonical
    assert b'"outcome_detail":null' in canonical


def test_format_instant_normalises_to_utc_and_refuses_naive_times() -> None:
    plus_two = datetime(2030, 1, 1, 11, 30, tzinfo=UTC).astimezone()
    assert format_instant(plus_two) == "2030-01-01T11:30:00.000000Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        format_instant(datetime(2030, 1, 1))


def test_leaf_and_node_hashes_are_domain_separated_as_in_rfc6962() -> None:
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )
    assert chain_hash(ZERO_HASH, b"l" * 32) == hashlib.sha256(ZERO_HASH + b"l" * 32).digest()


def test_merkle_tree_hash_follows_rfc6962_structure() -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(7)]
    a, b, c, d, e, f, g = leaves
    assert merkle_tree_hash([]) == hashlib.sha256(b"").digest()
    assert merkle_tree_hash([a]) == a
    assert merkle_tree_hash([a, b, c]) == node_hash(node_hash(a, b), c)
    # Seven leaves split 4 + 3, the right part 2 + 1.
    expected = node_hash(
        node_hash(node_hash(a, b), node_hash(c, d)),
        node_hash(node_hash(e, f), g),
    )
    assert merkle_tree_hash(leaves) == expected


def test_merkle_tree_hash_matches_rfc6962_test_vector() -> None:
    # Certificate Transparency's reference vectors: the 8 leaves of its test suite.
    inputs = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ]
    root = merkle_tree_hash([leaf_hash(i) for i in inputs])
    assert root.hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


@given(st.integers(min_value=0, max_value=70))
def test_accumulator_agrees_with_the_reference_tree_hash(n: int) -> None:
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(n)]
    tree = MerkleAccumulator()
    for leaf in leaves:
        tree.append(leaf)
    assert tree.size == n
    assert tree.root() == merkle_tree_hash(leaves)


# -- verification


def test_an_intact_log_verifies_with_its_root_checkpoint_and_head() -> None:
    records = build_log(9)
    result = verify_chain(records, anchor=anchor_of(records[:6]), head=head_of(records))
    assert result.ok, result.reason
    assert result.records_checked == 9
    assert result.first_bad_seq is None
    assert result.root_hash == merkle_tree_hash([r.leaf_hash for r in records])


def test_an_empty_log_verifies() -> None:
    assert verify_chain([], head=ChainHead(0, ZERO_HASH)).ok


def test_an_edited_column_names_its_record() -> None:
    records = build_log(6)
    records[3] = replace(records[3], fields=replace(records[3].fields, actor_id="intruder"))
    result = verify_chain(records)
    assert not result.ok
    assert result.first_bad_seq == 4
    assert result.reason is not None
    assert result.reason.startswith("edited")


def test_a_deleted_record_is_a_gap() -> None:
    records = build_log(6)
    del records[2]
    result = verify_chain(records)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert result.reason == "seq gap: expected seq 3, found 4: missing record(s) (deleted?)"


def test_swapped_seqs_are_caught_at_the_first_swapped_position() -> None:
    records = build_log(6)
    a, b = records[1], records[2]
    records[1] = replace(b, fields=replace(b.fields, seq=2))
    records[2] = replace(a, fields=replace(a.fields, seq=3))
    result = verify_chain(records)
    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_a_consistently_rechained_edit_passes_the_chain_but_not_the_checkpoint() -> None:
    records = build_log(5)
    anchor = anchor_of(records)
    previous = records[1].chain_hash
    rewritten = records[:2]
    for record in records[2:]:
        forged = seal(replace(record.fields, outcome="denied"), previous)
        rewritten.append(forged)
        previous = forged.chain_hash
    assert verify_chain(rewritten).ok
    result = verify_chain(rewritten, anchor=anchor)
    assert not result.ok
    assert result.reason is not None
    assert result.reason.startswith("rewritten: root mismatch")


def test_a_truncated_tail_is_caught_only_by_the_checkpoint() -> None:
    records = build_log(8)
    anchor = anchor_of(records)
    truncated = records[:5]
    assert verify_chain(truncated, head=head_of(truncated)).ok
    result = verify_chain(truncated, anchor=anchor)
    assert not result.ok
    assert result.first_bad_seq == 6
    assert result.reason == "truncated: log has 5 records, checkpoint at size 8"


def test_a_stale_head_is_reported() -> None:
    records = build_log(4)
    result = verify_chain(records[:3], head=head_of(records))
    assert not result.ok
    assert result.reason is not None
    assert result.reason.startswith("head mismatch")


_COLUMNS = ("canonical", "leaf_hash", "chain_hash")


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=12),
    data=st.data(),
)
def test_any_single_byte_change_fails_verification(n: int, data: st.DataObject) -> None:
    records = build_log(n)
    index = data.draw(st.integers(min_value=0, max_value=n - 1), label="record")
    column = data.draw(st.sampled_from(_COLUMNS), label="column")
    value: bytes = getattr(records[index], column)
    position = data.draw(st.integers(min_value=0, max_value=len(value) - 1), label="byte")
    flip = data.draw(st.integers(min_value=1, max_value=255), label="xor")
    changed = bytearray(value)
    changed[position] ^= flip
    records[index] = replace(records[index], **{column: bytes(changed)})
    result = verify_chain(records, anchor=anchor_of(build_log(n)), head=head_of(build_log(n)))
    assert not result.ok
    assert result.first_bad_seq == index + 1


@settings(max_examples=200, deadline=None)
@given(n=st.integers(min_value=1, max_value=8), data=st.data())
def test_any_changed_text_column_fails_verification(n: int, data: st.DataObject) -> None:
    records = build_log(n)
    index = data.draw(st.integers(min_value=0, max_value=n - 1), label="record")
    name = data.draw(
        st.sampled_from(["org_id", "actor_id", "patient_id", "action", "purpose_of_use"])
    )
    old = getattr(records[index].fields, name)
    new = data.draw(st.text(min_size=1, max_size=8).filter(lambda s: s != old), label="value")
    records[index] = replace(records[index], fields=replace(records[index].fields, **{name: new}))
    result = verify_chain(records)
    assert (result.ok, result.first_bad_seq) == (False, index + 1)


# -- checkpoints and FHIR


def test_checkpoint_message_is_canonical_json() -> None:
    message = checkpoint_message(12, "ab" * 32, T0)
    assert message == (
        b'{"root_hash":"' + b"ab" * 32 + b'","signed_at":"2030-01-01T09:30:00.000000Z",'
        b'"tree_size":12}'
    )


def test_a_read_exports_as_a_balp_patient_read_audit_event() -> None:
    event = to_audit_event(fields(5, source_ip="10.1.2.3"))
    assert event["resourceType"] == "AuditEvent"
    assert event["type"]["code"] == "rest"
    assert event["subtype"] == [
        {"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}
    ]
    assert event["action"] == "R"
    assert event["outcome"] == "0"
    assert event["recorded"] == "2030-01-01T09:30:05.000250Z"
    assert event["agent"][0]["who"]["identifier"]["value"] == "user-2"
    assert event["agent"][0]["network"] == {"address": "10.1.2.3", "type": "2"}
    assert event["entity"][0]["what"] == {"reference": "Patient/pat-1"}
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"


@pytest.mark.parametrize(
    ("action", "outcome", "code", "fhir_action", "fhir_outcome"),
    [
        ("create", "success", "create", "C", "0"),
        ("update", "denied", "update", "U", "4"),
        ("delete", "error", "delete", "D", "8"),
        ("query", "success", "search", "E", "0"),
    ],
)
def test_actions_and_outcomes_map_to_fhir_codes(
    action: str, outcome: str, code: str, fhir_action: str, fhir_outcome: str
) -> None:
    event = to_audit_event(fields(1, action=action, outcome=outcome))
    assert event["subtype"][0]["code"] == code
    assert (event["action"], event["outcome"]) == (fhir_action, fhir_outcome)


def test_an_export_is_a_dicom_export_event_and_a_query_carries_its_fingerprint() -> None:
    export = to_audit_event(fields(1, action="export"))
    assert export["type"]["code"] == "110106"
    assert "subtype" not in export
    query = to_audit_event(
        fields(2, action="query", patient_id=None, resource_id=None, query_fingerprint="family")
    )
    assert query["entity"][0]["role"]["code"] == "24"
    assert query["entity"][0]["query"] == "ZmFtaWx5"
