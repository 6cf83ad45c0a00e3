"""The steps scheduling's doors take: `api/` (HTTP) and `handlers/` (events, timers)
call these, never each other. A use case takes plain values and domain objects, works
in the caller's transaction (it never commits) and raises the typed errors the doors
map to problem+json."""
