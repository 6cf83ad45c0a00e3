"""Event subscribers of the scheduling service (none yet: it consumes no events)."""
