"""Tables and repositories of the scheduling database."""
