"""The synthetic demo practice seeded by `careloop dev up`.

Every value here is invented for demonstration and marked as synthetic.
"""

from __future__ import annotations

DEMO_ORG = "demo-group"
DEMO_ACTOR = "demo-seeder"


def demo_patients() -> list[dict[str, object]]:
    """Registration bodies of fictional patients (SYNTHETIC DATA, not real people)."""
    return [
        {
            "location_id": "demo-north-clinic",
            "name": {"family": "Synthetic-Ortega", "given": ["Demo"]},
            "birth_date": "1961-02-03",
            "sex": "female",
            "phones": ["+1 555 010 0101"],
            "emails": ["demo.ortega@example.org"],
            "preferred_language": "es",
        },
        {
            "location_id": "demo-north-clinic",
            "name": {"family": "Synthetic-Nakamura", "given": ["Demo"]},
            "birth_date": "1984-07-19",
            "sex": "male",
            "phones": ["+1 555 010 0102"],
            "emails": ["demo.nakamura@example.org"],
            "preferred_language": "en",
        },
        {
            "location_id": "demo-south-behavioral",
            "name": {"family": "Synthetic-Okafor", "given": ["Demo"]},
            "birth_date": "1999-11-30",
            "sex": "other",
            "phones": ["+1 555 010 0103"],
            "emails": ["demo.okafor@example.org"],
            "preferred_language": "en",
        },
    ]
