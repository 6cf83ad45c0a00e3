"""HTTP routers and request/response schemas of the tasks service (a door)."""
