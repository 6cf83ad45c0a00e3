"""The steps the doors take: one function per command or query; owns the transaction."""
