"""HTTP doors of the identity service."""
