"""Identity tables and the repository that owns every query on them."""
