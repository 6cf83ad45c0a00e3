"""Local doubles of the providers messaging talks to, for tests and local runs."""
