"""Database access: engine and sessions per service, platform tables, migrations."""

from careloop_kit.db.engine import make_engine, make_sessionmaker
from careloop_kit.db.tables import PlatformTables, add_platform_tables, service_metadata

__all__ = [
    "PlatformTables",
    "add_platform_tables",
    "make_engine",
    "make_sessionmaker",
    "service_metadata",
]
