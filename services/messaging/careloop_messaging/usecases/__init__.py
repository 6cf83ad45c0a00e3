"""The steps messaging's doors take: one function per command or query, called by the
HTTP routes (`api/`) and the event subscribers and workers (`handlers/`) alike."""
