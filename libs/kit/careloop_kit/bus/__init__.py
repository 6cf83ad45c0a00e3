"""Kafka: client configuration, the transactional outbox, idempotent consumers, dead letters."""
