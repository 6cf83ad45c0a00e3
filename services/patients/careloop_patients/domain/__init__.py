"""Pure patient logic: the record, its normalization and search keys. No I/O."""
