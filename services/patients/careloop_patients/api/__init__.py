"""HTTP doors of the patients service."""
