"""Committed generated files match the models, and published versions stay compatible."""

import copy
import importlib.util
import json
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from careloop_contracts import PatientRegistered, isolated_registry, registry
from careloop_contracts.compat import breaking_changes, check_compatibility, load_published
from careloop_contracts.generate import PUBLISHED_DIR, check, default_root, main, stale_files
from careloop_contracts.schema import asyncapi_document, event_schema

pytestmark = pytest.mark.unit

ROOT = default_root()


def published() -> dict[str, dict[str, Any]]:
    return load_published(ROOT / PUBLISHED_DIR)


def test_generated_files_are_fresh() -> None:
    assert stale_files(ROOT) == [], "run: uv run python -m careloop_contracts.generate"


def test_published_versions_are_compatible() -> None:
    assert set(published()) == set(registry()), "every event type has a published baseline"
    assert check_compatibility(published()) == []


def test_ci_check_passes_on_the_committed_tree() -> None:
    assert check(ROOT) == []


def test_schema_carries_id_title_description_and_topic() -> None:
    schema = event_schema(PatientRegistered)
    assert schema["$id"] == "urn:careloop:event:careloop.patients.patient.registered.v1"
    assert schema["title"] == "PatientRegistered"
    assert schema["description"].startswith("Emitted when a new patient record is created")
    assert schema["x-careloop-topic"] == "careloop.patients"
    assert schema["x-careloop-key"] == ["patient_id"]


def test_asyncapi_document_shape() -> None:
    doc = asyncapi_document()
    assert doc["asyncapi"] == "3.0.0"
    patients = doc["channels"]["careloop.patients"]
    assert patients["bindings"]["kafka"]["partitions"] == 6
    assert "careloop.audit.access.recorded.v1" in patients["messages"]
    assert doc["channels"]["careloop.audit.checkpoints"]["bindings"]["kafka"]["topicConfiguration"][
        "cleanup.policy"
    ] == ["compact"]
    operation = doc["operations"]["patients.send.patients"]
    assert operation["action"] == "send"
    for ref in operation["messages"]:
        assert ref["$ref"].startswith("#/channels/careloop.patients/messages/")
    message = doc["components"]["messages"]["careloop.patients.patient.registered.v1"]
    headers = message["headers"]["properties"]
    assert headers["ce_type"]["const"] == "careloop.patients.patient.registered.v1"
    assert "ce_orgid" in message["headers"]["required"]


# --- the check catches breaking changes ------------------------------------------------


def baseline() -> dict[str, Any]:
    return copy.deepcopy(published()["careloop.patients.patient.registered.v1"])


def test_field_removed_is_breaking() -> None:
    new = baseline()
    del new["properties"]["location_id"]
    assert breaking_changes(baseline(), new) == ["location_id: field removed"]


def test_type_changed_is_breaking() -> None:
    new = baseline()
    new["properties"]["patient_id"] = {"type": "integer", "title": "Patient Id"}
    assert breaking_changes(baseline(), new) == [
        "patient_id: type changed from 'string' to 'integer'"
    ]


def test_nullable_to_required_type_is_breaking() -> None:
    new = baseline()
    new["properties"]["location_id"] = {"type": "string", "minLength": 1, "maxLength": 128}
    problems = breaking_changes(baseline(), new)
    assert len(problems) == 1
    assert problems[0].startswith("location_id: type changed")


def test_new_required_field_is_breaking() -> None:
    new = baseline()
    new["properties"]["mrn_hash"] = {"type": "string"}
    new["required"].append("mrn_hash")
    assert breaking_changes(baseline(), new) == ["mrn_hash: required field added"]


def test_optional_field_made_required_is_breaking() -> None:
    new = baseline()
    new["required"].append("location_id")
    assert breaking_changes(baseline(), new) == ["location_id: optional field made required"]


def test_enum_narrowed_is_breaking() -> None:
    old = copy.deepcopy(published()["careloop.audit.access.recorded.v1"])
    new = copy.deepcopy(old)
    new["properties"]["outcome"]["enum"] = ["success", "denied"]
    assert breaking_changes(old, new) == ["outcome: enum narrowed, values removed: ['error']"]


def test_constraint_tightened_is_breaking() -> None:
    new = baseline()
    new["properties"]["patient_id"]["maxLength"] = 36
    assert breaking_changes(baseline(), new) == ["patient_id: maxLength changed from 128 to 36"]


def test_optional_field_added_is_compatible() -> None:
    new = baseline()
    new["properties"]["source_system"] = {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "default": None,
    }
    assert breaking_changes(baseline(), new) == []


def test_documentation_changes_are_compatible() -> None:
    new = baseline()
    new["description"] = "Reworded."
    new["properties"]["patient_id"]["description"] = "Reworded too."
    assert breaking_changes(baseline(), new) == []


def test_removed_event_type_is_breaking() -> None:
    models = {t: c for t, c in registry().items() if t != PatientRegistered.event_type}
    assert check_compatibility(published(), models) == [
        "careloop.patients.patient.registered.v1: published event type has no model any more"
    ]


# --- a model edited in place under a published type name --------------------------------

EDITED_MODULE = '''
from careloop_contracts.base import Event, Id, UtcDatetime


class PatientRegistered(Event):
    """Emitted when a new patient record is created (edited in place: breaking)."""

    event_type = "careloop.patients.patient.registered.v1"
    topic = "careloop.patients"

    patient_id: int
    org_id: Id
    registered_at: UtcDatetime
    registered_by: Id
    note: str | None = None
'''


def import_from(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def test_editing_a_published_model_in_place_is_caught_by_the_ci_check(tmp_path: Path) -> None:
    path = tmp_path / "edited_patients.py"
    path.write_text(textwrap.dedent(EDITED_MODULE), encoding="utf-8")
    others = {t: c for t, c in registry().items() if t != PatientRegistered.event_type}
    with isolated_registry(others):
        module = import_from(path, "edited_patients")
        assert registry()[PatientRegistered.event_type] is module.PatientRegistered
        problems = check_compatibility(published())
        stale = stale_files(ROOT)
    assert sorted(problems) == [
        "careloop.patients.patient.registered.v1: location_id: field removed",
        "careloop.patients.patient.registered.v1: patient_id: type changed "
        "from 'string' to 'integer'",
        "careloop.patients.patient.registered.v1: registered_by: required field added",
    ]
    assert "contracts/schemas/careloop.patients.patient.registered.v1.json: out of date" in stale
    # The committed registry is untouched.
    assert registry()[PatientRegistered.event_type] is PatientRegistered


def test_check_command_exits_1_on_a_stale_tree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schemas = tmp_path / "contracts" / "schemas"
    (schemas / "published").mkdir(parents=True)
    for source in (ROOT / PUBLISHED_DIR).glob("*.json"):
        (schemas / "published" / source.name).write_text(source.read_text())
    old = json.loads((schemas / "published" / "careloop.audit.access.recorded.v1.json").read_text())
    del old["properties"]["actor_id"]["maxLength"]
    old["properties"]["legacy_field"] = {"type": "string"}
    (schemas / "published" / "careloop.audit.access.recorded.v1.json").write_text(json.dumps(old))

    assert main(["--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "contracts/schemas/asyncapi.json: missing" in err
    assert "docs/events.md: missing" in err
    assert "legacy_field: field removed" in err
    assert "actor_id: maxLength changed from None to 128" in err
