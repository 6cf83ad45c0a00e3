"""Event subscribers of the gateway (none: it consumes and publishes no events)."""
