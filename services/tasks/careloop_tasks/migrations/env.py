from careloop_kit.db.env_template import run_migrations
from careloop_tasks.store.tables import metadata

run_migrations(metadata)
