"""``python -m edge_agent_host.hubd``: the same as ``edge-agent-hub``."""

from __future__ import annotations

from edge_agent_host.hubd.cli import main

raise SystemExit(main())
