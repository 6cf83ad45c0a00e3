"""What every use case shares: the service's settings on the runtime, the port to its
encrypted fields, and the problems it answers with."""

from __future__ import annotations

from careloop_kit.fields import FieldCipher, cached_field_cipher
from careloop_kit.problems import Conflict, ProblemError
from careloop_kit.service import Runtime
from careloop_tasks.settings import TasksSettings
from careloop_tasks.store.tables import field_key

SETTINGS_KEY = "tasks_settings"


class InvalidTask(ProblemError):
    status, title, slug = 422, "Invalid task request", "invalid-task"


class InvalidRuleSet(ProblemError):
    status, title, slug = 422, "Invalid task rules", "invalid-task-rules"


class TaskChanged(Conflict):
    title, slug = "Task changed", "task-changed"


class TaskNotActive(Conflict):
    title, slug = "Task closed", "task-closed"


def settings_of(runtime: Runtime) -> TasksSettings:
    """The service's own settings (the runtime holds them typed as the kit's base)."""
    settings: TasksSettings = runtime.state[SETTINGS_KEY]
    return settings


def field_cipher(runtime: Runtime) -> FieldCipher:
    """The port of tasks' encrypted fields (comments, notes), made once per runtime."""
    return cached_field_cipher(runtime, settings_of(runtime).fields_transit_key, field_key)
