"""The steps the gateway's doors take: `api/` (the proxy and the docs) and the lifespan's
background jobs call these. Each takes plain values and the live objects it needs, and
owns its short transaction."""
