"""The hub's traffic with the broker, through its one connection: what it hears (the listener's
checks, :mod:`.listener`; the bounded queue in front of the database, :mod:`.queue`; the same
messages on disk until stored, :mod:`.spool`) and what it publishes (:mod:`.publisher`)."""
