"""Care-gaps persistence and the files the service reads."""
