"""Pure logic of the gateway: rate limits, header rules, idempotency, OpenAPI merge."""
