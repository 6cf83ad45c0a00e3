"""Event subscribers and timer workers of the tasks service (a door)."""
