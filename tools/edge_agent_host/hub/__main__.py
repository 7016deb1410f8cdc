"""``python -m edge_agent_host.hub``: the same as ``edge-agent-hub``."""

from __future__ import annotations

from edge_agent_host.hub.cli import main

raise SystemExit(main())
