"""The steps identity's doors take: one function per command or query, called by the
HTTP routes (`api/`) and, once identity consumes events, by `handlers/` alike."""
