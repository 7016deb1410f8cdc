"""The base every part of the hub builds on: the strict, frozen model of its config and rollout
records (:mod:`.strict`)."""
