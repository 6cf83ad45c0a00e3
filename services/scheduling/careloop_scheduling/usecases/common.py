"""What every use case shares: the service's settings on the runtime and the 422."""

from __future__ import annotations

from careloop_kit.problems import ProblemError
from careloop_kit.service import Runtime
from careloop_scheduling.settings import SchedulingSettings

SETTINGS_KEY = "scheduling_settings"


class InvalidScheduling(ProblemError):
    status, title, slug = 422, "Invalid scheduling request", "invalid-scheduling"


def settings_of(runtime: Runtime) -> SchedulingSettings:
    """The service's own settings (the runtime holds them typed as the kit's base)."""
    settings: SchedulingSettings = runtime.state[SETTINGS_KEY]
    return settings
