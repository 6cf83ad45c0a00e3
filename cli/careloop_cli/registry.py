"""The services the platform runs, and how to build each one."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from careloop_kit.settings import KitSettings


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    package: str
    default_port: int

    def module(self, suffix: str) -> Any:
        return importlib.import_module(f"{self.package}.{suffix}")

    @property
    def migrations(self) -> Path:
        return Path(importlib.import_module(self.package).__file__ or "").parent / "migrations"

    def settings_class(self) -> type[KitSettings]:
        module = self.module("settings")
        classes = [
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, KitSettings)
            # Defined here, not a kit base imported to build on (KitSettings, SmtpSettings).
            and value.__module__ == module.__name__
        ]
        if len(classes) != 1:
            raise RuntimeError(f"{self.package}.settings must define exactly one settings class")
        return classes[0]

    def app_factory(self) -> Callable[..., Any]:
        factory: Callable[..., Any] = self.module("app").create_app
        return factory


# Services never call each other; the gateway (last) routes to the others.
SERVICES: dict[str, ServiceEntry] = {
    entry.name: entry
    for entry in (
        ServiceEntry("patients", "careloop_patients", 8101),
        ServiceEntry("audit", "careloop_audit", 8102),
        ServiceEntry("identity", "careloop_identity", 8103),
        ServiceEntry("scheduling", "careloop_scheduling", 8104),
        ServiceEntry("messaging", "careloop_messaging", 8105),
        ServiceEntry("referrals", "careloop_referrals", 8106),
        ServiceEntry("tasks", "careloop_tasks", 8107),
        ServiceEntry("caregaps", "careloop_caregaps", 8108),
        ServiceEntry("gateway", "careloop_gateway", 8100),
    )
}


def service(name: str) -> ServiceEntry:
    """Look a service up by name, with a helpful error."""
    try:
        return SERVICES[name]
    except KeyError:
        known = ", ".join(SERVICES)
        raise SystemExit(f"unknown service {name!r}; known services: {known}") from None
