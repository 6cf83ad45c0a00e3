"""Tables and repositories of the tasks database."""
