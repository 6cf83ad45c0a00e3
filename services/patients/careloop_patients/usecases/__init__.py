"""The steps of the patients service: `api/` calls these (as a future event handler
would). A use case takes the caller, plain values and domain objects, works in the
caller's session and audit scope (it never commits) and raises the typed errors the
doors map to problem+json."""
