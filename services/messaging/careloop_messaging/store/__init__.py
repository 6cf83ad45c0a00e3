"""Tables and repositories of the messaging database."""
