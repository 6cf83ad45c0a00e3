"""Event subscribers of the patients service (none yet: it only publishes)."""
