"""The steps both doors take: one function per command or query; owns the transaction."""
