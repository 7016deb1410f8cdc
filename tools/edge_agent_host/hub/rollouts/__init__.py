"""Staged rollouts: a rollout's plan (:mod:`.plan`), its tables (:mod:`.store`), a rollout started
from ``rollout start``'s options (:mod:`.start`), the service's runner that carries it out
(:mod:`.runner`) and its way to the nodes (:mod:`.client`)."""
