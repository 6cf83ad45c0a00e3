"""No PHI in what insecure channels carry: render every default with a fake patient at hand.

The patient's details sit right next to the render call, as they will in the service;
the test proves the renderer refuses every one of them and that nothing it produces for
SMS bodies, email subjects and email bodies contains any of them.
"""

from __future__ import annotations

import random
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime

import pytest

from careloop_messaging.domain.defaults import BUILT_IN_TEMPLATES
from careloop_messaging.domain.outreach import offer_fields
from careloop_messaging.domain.templates import (
    Channel,
    MessageKind,
    SenderProfile,
    TemplateRefused,
    TemplateRenderer,
)

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class FakePatient:
    """Synthetic values only; distinctive so a substring match means a real leak."""

    first_name: str
    last_name: str
    birth_date: str
    birth_date_us: str
    provider_name: str
    visit_type: str
    diagnosis: str


def seeded_patient(seed: int) -> FakePatient:
    rng = random.Random(seed)
    year, month, day = rng.randint(1930, 2015), rng.randint(1, 12), rng.randint(1, 28)
    return FakePatient(
        first_name=rng.choice(["Marisol", "Thaddeus", "Ngozi", "Evander", "Ilse"]),
        last_name=rng.choice(["Quintero-Abernathy", "Vashchenko", "Okonkwo-Lind", "Brightwater"]),
        birth_date=f"{year:04d}-{month:02d}-{day:02d}",
        birth_date_us=f"{month:02d}/{day:02d}/{year:04d}",
        provider_name="Dr. " + rng.choice(["Whitlock", "Anand-Farrow", "Castellanos"]),
        visit_type=rng.choice(["Methadone intake", "HIV follow-up", "Prenatal visit"]),
        diagnosis=rng.choice(["F11.20 Opioid dependence", "B20 HIV disease", "O09.90"]),
    )


SAFE_FIELDS = {
    "appointment_date": "Monday, June 8",
    "appointment_time": "2:30 PM",
    "secure_link": "https://care.example.test/m/Qm2Rt7",
}
# Reschedule offers add their numbered times (dates and times only, never who or what).
OFFER_FIELDS = offer_fields(
    [datetime(2031, 6, 8 + n, 18, 30, tzinfo=UTC) for n in range(3)], "America/Chicago", "en"
)
INSECURE = [t for t in BUILT_IN_TEMPLATES.values() if t.key.channel is not Channel.PORTAL]


def safe_fields(kind: MessageKind) -> dict[str, str]:
    return SAFE_FIELDS | OFFER_FIELDS if kind is MessageKind.RESCHEDULE_OFFER else SAFE_FIELDS


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("sensitive", [False, True])
def test_no_default_output_contains_any_patient_detail(seed: int, sensitive: bool) -> None:
    patient = seeded_patient(seed)
    sender = SenderProfile("Lakeside Family Clinic", "Lakeside Recovery Unit", sensitive=sensitive)
    renderer = TemplateRenderer()
    outputs: list[str] = []
    for template in INSECURE:
        # Whatever a careless caller adds from the patient record is refused outright.
        for field in fields(patient):
            with pytest.raises(TemplateRefused):
                renderer.render(
                    template,
                    {**safe_fields(template.key.kind), field.name: getattr(patient, field.name)},
                    sender=sender,
                )
        rendered = renderer.render(template, safe_fields(template.key.kind), sender=sender)
        outputs += [rendered.body, rendered.subject or "", rendered.html_body or ""]

    assert len(outputs) == 3 * len(INSECURE)
    assert any(OFFER_FIELDS["options"] in output for output in outputs)
    text = "\n".join(outputs).casefold()
    for value in astuple(patient):
        assert value.casefold() not in text, f"{value!r} leaked"
    if sensitive:
        assert "lakeside" not in text
