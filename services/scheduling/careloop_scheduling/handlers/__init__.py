"""Event subscribers and timer handlers of the scheduling service."""
