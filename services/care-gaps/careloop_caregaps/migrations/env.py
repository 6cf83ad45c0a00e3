from careloop_caregaps.store.tables import metadata
from careloop_kit.db.env_template import run_migrations

run_migrations(metadata)
