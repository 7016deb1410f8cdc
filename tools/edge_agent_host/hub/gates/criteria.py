"""A rollout's ``--criterion`` options, parsed once: each by its kind (a shadow criterion starts
with ``shadow:``, :mod:`.shadow`; any other is on a health measure, :mod:`.health`), and
``--shadow-s``, the time the shadow criteria judge, checked against them.

``rollout start``, ``learn publish`` and ``[learning] rollout`` (checked by ``check-config``)
all read their criteria here.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge_agent_host.hub.gates.criterion_text import CriterionError
from edge_agent_host.hub.gates.health import HealthCriterion, parse_criterion
from edge_agent_host.hub.gates.shadow import (
    SHADOW_PREFIX,
    ShadowCriterion,
    parse_shadow_criterion,
)

__all__ = ["check_shadow_time", "parse_criteria"]


def parse_criteria(
    texts: Sequence[str], shadow_s: float
) -> tuple[list[HealthCriterion], list[ShadowCriterion]]:
    """The health criteria and the shadow criteria of ``texts``, in their order, with
    ``shadow_s`` checked (:func:`check_shadow_time`); :class:`CriterionError` (one line) for the
    first that is wrong, the shadow ones read first."""
    is_shadow = [t.strip().startswith(SHADOW_PREFIX) for t in texts]
    shadow = [parse_shadow_criterion(t) for t, s in zip(texts, is_shadow, strict=True) if s]
    health = [parse_criterion(t) for t, s in zip(texts, is_shadow, strict=True) if not s]
    check_shadow_time(shadow, shadow_s)
    return health, shadow


def check_shadow_time(shadow: Sequence[ShadowCriterion], shadow_s: float) -> None:
    """``--shadow-s`` in range, and given when a criterion judges the canaries' shadow
    (CriterionError, one line)."""
    if not 0.0 <= shadow_s <= 86400.0:
        raise CriterionError(f"--shadow-s {shadow_s:g}: seconds from 0 to 86400")
    if shadow and shadow_s <= 0.0:
        raise CriterionError(
            f"--criterion {shadow[0].text()!r}: judges the canaries' shadow; give it a time "
            "with --shadow-s S"
        )
