"""A fleet simulator: many lightweight nodes with the real fleet link, protocol, command
verification and deployment transfer, and no agents, against a real broker -- to measure the hub
at fleet scale on one machine (docs/hub.md, "Simulating a fleet").

``python -m edge_agent_host.fleetsim --nodes 250 --port 1883 --fleet sim ...``
"""
