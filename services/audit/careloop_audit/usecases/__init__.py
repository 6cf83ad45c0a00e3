"""The steps the audit service's doors take: one function per command or query.

`api/` (HTTP) and `handlers/` (the trail consumer, the checkpoint job) call these and
never each other; each step works in the session it is handed (the door owns the
transaction) or, where it needs a snapshot of its own, opens it here.
"""
