"""``edge-agent-hub run``: the hub service's supervised loop (:mod:`.loop`)."""
