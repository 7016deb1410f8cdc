"""What the operator's fleet client (:mod:`edge_agent_host.fleetctl`) and the hub service
(:mod:`edge_agent_host.hub`) share, so that both speak to the fleet the same way and never import
each other: a node's presence (:mod:`.presence`), the fleet table (:mod:`.table`), signed commands
(:mod:`.commands`), bundles sent in chunks (:mod:`.transfer`) and the one error they raise
(:mod:`.errors`). The device's side of the same protocol is :mod:`edge_agent.fleet`."""
