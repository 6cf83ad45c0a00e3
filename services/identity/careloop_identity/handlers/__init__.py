"""Event subscribers of the identity service (none yet: it only publishes)."""
