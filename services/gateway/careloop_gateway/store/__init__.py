"""Tables and the repository of idempotency records."""
