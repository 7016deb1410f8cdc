"""edge-agent-host: the host-side tool that writes, signs, verifies and inspects bundles.

This package may import :mod:`edge_agent` (so both sides share one bundle schema); the device
package never imports this one.
"""

from __future__ import annotations

__all__: list[str] = []
