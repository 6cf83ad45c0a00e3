"""Settings of the tasks service (environment prefix `CARELOOP_`)."""

from __future__ import annotations

from pydantic import Field

from careloop_contracts.platform import TASKS_FIELDS_KEY
from careloop_kit.settings import KitSettings


class TasksSettings(KitSettings):
    http_port: int = Field(8107, description="Port of the tasks API.")
    fields_transit_key: str = Field(
        TASKS_FIELDS_KEY,
        description="Vault transit key that wraps the data keys of task comments and notes.",
    )
    overdue_poll_interval_s: float = Field(
        5.0,
        gt=0,
        description=(
            "Seconds between two scans for tasks that reached their due time (an overdue "
            "task is reported at most this late; every replica scans, they share the work)."
        ),
    )
    max_page_size: int = Field(200, ge=1, le=1000, description="Tasks one page lists at most.")
