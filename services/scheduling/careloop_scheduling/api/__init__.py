"""HTTP routers of the scheduling service."""
