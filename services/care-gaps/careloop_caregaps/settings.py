"""Settings of the care-gaps service (environment prefix `CARELOOP_`).

Production refuses plain-http URLs for patients and identity: the demographics read
carries a birth date and a service token.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from careloop_contracts.platform import CAREGAPS_FIELDS_KEY
from careloop_kit.settings import KitSettings


class CaregapsSettings(KitSettings):
    http_port: int = Field(8108, description="Port of the care-gaps API.")
    fields_transit_key: str = Field(
        CAREGAPS_FIELDS_KEY,
        description=(
            "Vault transit key that wraps the data keys of care-gaps' sealed fields "
            "(demographics, facts, gap evidence, reasons given by hand)."
        ),
    )
    patients_url: str = Field(
        "http://127.0.0.1:8101",
        description="Base URL of the patients API (birth date and sex, read on registration "
        "and on a change of either).",
    )
    identity_token_url: str = Field(
        "http://127.0.0.1:8103/oauth/token",
        description="Identity's token endpoint, for care-gaps' own service token.",
    )
    patients_timeout_s: float = Field(
        5.0, gt=0, description="Seconds a demographics read from patients may take."
    )
    measures_dir: str | None = Field(
        None,
        description=(
            "Folder of the measure library's data files; unset: the files shipped in the "
            "package (`careloop_caregaps/measures/`). Loaded and validated at start."
        ),
    )
    evaluation_batch_size: int = Field(
        200,
        ge=1,
        le=5000,
        description=(
            "Patients a population evaluation evaluates per transaction; its progress "
            "(done, changed, cursor) is committed after each batch, so a restart resumes "
            "there."
        ),
    )
    evaluation_poll_interval_s: float = Field(
        1.0,
        gt=0,
        description="Seconds between two looks for queued or interrupted evaluation jobs.",
    )
    campaign_poll_interval_s: float = Field(
        5.0,
        gt=0,
        description=(
            "Seconds between two looks for campaign steps whose answer time ran out (the "
            "next step, or the coordinators' task, follows)."
        ),
    )
    max_page_size: int = Field(
        500, ge=1, le=5000, description="Rows one page of the population view lists at most."
    )

    @model_validator(mode="after")
    def _calls_are_encrypted(self) -> CaregapsSettings:
        if self.environment != "production":
            return self
        problems = [
            f"{name} must use https:// in production"
            for name in ("patients_url", "identity_token_url")
            if not getattr(self, name).startswith("https://")
        ]
        if problems:
            raise ValueError("production care-gaps settings refused: " + "; ".join(problems))
        return self
