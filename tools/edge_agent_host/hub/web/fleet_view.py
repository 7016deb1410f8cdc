"""What the fleet page reads: each node's bundles and deployment, and ``/api/fleet.json``'s
filtered, sorted, paged answer.

The service's loop builds the snapshot (:func:`~.snapshot.build_snapshot`); these
functions add to its rows what the page shows per node -- the bundle each group runs (from the
node's birth) and where the node stands in the newest rollout that names it -- and answer one
request from a finished snapshot without touching the database.

``/api/fleet.json`` takes, all optional:

============  =====================================================================================
``q``         text: the node's name, version, profile, bundle, or its deployment's state or
              reason contain it (case-insensitive)
``health``    the node's condition (:func:`~.snapshot.condition_of`): ``green``, ``amber``,
              ``red``
``presence``  ``online``, ``silent``, ``offline`` or ``unknown``
              (:func:`edge_agent_host.fleet.presence.presence`)
``deploy``    the node's state in its newest rollout: ``ok``, ``failed``, ``pending``,
              ``reverted``, ``revert_failed``, or ``none`` (in no recent rollout)
``sort``      a column of :data:`SORT_KEYS` (default ``node``); ``order`` ``asc`` or ``desc``.
              Unknown values (no telemetry yet) sort last either way; ties by node name
``offset``    rows to skip; ``limit`` rows to send (1 .. :data:`MAX_LIMIT`; without it, every
              matching node: what a script wants, not the page)
============  =====================================================================================

Whatever the filter, the answer's ``counts`` are over the whole fleet (``health``, ``deploy``,
``presence``, and of it ``online`` and ``silent``, ``total``) and ``matched`` is how many nodes
passed it, so a page of 50 still says "12 red of 1,000". A bad parameter is a
:class:`ValueError` naming it (the server answers 400).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final
from urllib.parse import parse_qs

from edge_agent_host.fleet.presence import PRESENCES

__all__ = [
    "DEPLOY_STATES",
    "MAX_LIMIT",
    "SORT_KEYS",
    "FleetQuery",
    "bundles_of",
    "deployments_by_node",
    "fleet_counts",
    "fleet_page",
    "rollout_failures",
]

MAX_LIMIT: Final = 1000
MAX_FAILURES_SHOWN: Final = 5
"""A rollout's failed nodes listed with their reasons in the snapshot (the count is exact)."""

CONDITION_RANK: Final = {"red": 0, "amber": 1, "green": 2}
DEPLOY_RANK: Final = {"revert_failed": 0, "failed": 1, "pending": 2, "reverted": 3, "ok": 4}
DEPLOY_STATES: Final = (*DEPLOY_RANK, "none")
FAILED_NODE_STATES: Final = frozenset({"failed", "revert_failed"})


def _memory_fraction(n: Mapping[str, Any]) -> float | None:
    rss, budget = n.get("rss_bytes"), n.get("budget_bytes")
    return float(rss) / float(budget) if rss is not None and budget else None


def _deploy_state(n: Mapping[str, Any]) -> str:
    d = n.get("deployment")
    return str(d["state"]) if d else "none"


SORT_KEYS: Final[Mapping[str, Callable[[Mapping[str, Any]], Any]]] = {
    "node": lambda n: n["node"],
    "health": lambda n: CONDITION_RANK.get(n.get("health", ""), 3),
    "online": lambda n: n.get("online"),
    "last_seen": lambda n: n.get("last_seen"),
    "memory": _memory_fraction,
    "rss": lambda n: n.get("rss_bytes"),
    "tick_p50": lambda n: n.get("tick_p50_ms"),
    "tick_p99": lambda n: n.get("tick_p99_ms"),
    "cpu": lambda n: n.get("cpu_temp_c"),
    "outbox": lambda n: n.get("outbox_depth"),
    "version": lambda n: n.get("software_version"),
    "bundle": lambda n: " ".join(b.get("bundle") or "" for b in n.get("bundles") or ()) or None,
    "deploy": lambda n: DEPLOY_RANK.get(_deploy_state(n), 5),
}


# building the snapshot's rows ----------------------------------------------------------------
def bundles_of(birth: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The bundle each of the node's groups runs, as its birth says (group order)."""
    groups = birth.get("groups") or {}
    out = []
    for group in sorted(groups):
        info = groups[group] if isinstance(groups[group], Mapping) else {}
        out.append(
            {
                "group": group,
                "bundle": info.get("bundle"),
                "bundle_sha256": info.get("bundle_sha256"),
            }
        )
    return out


def deployments_by_node(rollouts: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each node's row in the newest rollout that names it.

    ``rollouts``: full summaries (:meth:`Rollout.summary`, with ``nodes``), newest first.
    """
    out: dict[str, dict[str, Any]] = {}
    for r in rollouts:
        for node, row in (r.get("nodes") or {}).items():
            if node in out:
                continue
            out[node] = {
                "rollout": r["id"],
                "rollout_state": r["state"],
                "group": r["group"],
                "bundle": r["bundle"],
                "bundle_sha256": r["bundle_sha256"],
                "wave": row["wave"],
                "state": row["state"],
                "detail": row.get("detail") or "",
                "updated": row.get("updated"),
            }
    return out


def rollout_failures(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The first :data:`MAX_FAILURES_SHOWN` failed nodes of a rollout with their reasons."""
    failed = [
        {"node": node, "state": row["state"], "detail": row.get("detail") or ""}
        for node, row in sorted((summary.get("nodes") or {}).items())
        if row["state"] in FAILED_NODE_STATES
    ]
    return failed[:MAX_FAILURES_SHOWN]


def fleet_counts(nodes: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The whole fleet's tallies (the page's header, whatever its filter): ``online`` and
    ``silent`` are ``presence``'s two that the page shows beside the total."""
    health = dict.fromkeys(CONDITION_RANK, 0)
    deploy = dict.fromkeys(DEPLOY_STATES, 0)
    presences = dict.fromkeys(PRESENCES, 0)
    total = 0
    for n in nodes:
        total += 1
        here = n.get("presence", "unknown")
        presences[here] = presences.get(here, 0) + 1
        health[n.get("health", "red")] = health.get(n.get("health", "red"), 0) + 1
        state = _deploy_state(n)
        deploy[state] = deploy.get(state, 0) + 1
    return {
        "total": total,
        "online": presences["online"],
        "silent": presences["silent"],
        "presence": presences,
        "health": health,
        "deploy": deploy,
    }


# answering a request -------------------------------------------------------------------------
class FleetQuery:
    """One ``/api/fleet.json`` request's parameters (module docstring), checked."""

    __slots__ = ("deploy", "health", "limit", "offset", "order", "presence", "sort", "text")

    def __init__(
        self,
        *,
        text: str = "",
        health: str | None = None,
        presence: str | None = None,
        deploy: str | None = None,
        sort: str = "node",
        order: str = "asc",
        offset: int = 0,
        limit: int | None = None,
    ) -> None:
        if health is not None and health not in CONDITION_RANK:
            raise ValueError(f"health: {health!r} is not one of green, amber, red")
        if presence is not None and presence not in PRESENCES:
            raise ValueError(f"presence: {presence!r} is not one of {', '.join(PRESENCES)}")
        if deploy is not None and deploy not in DEPLOY_STATES:
            raise ValueError(f"deploy: {deploy!r} is not one of {', '.join(DEPLOY_STATES)}")
        if sort not in SORT_KEYS:
            raise ValueError(f"sort: {sort!r} is not one of {', '.join(SORT_KEYS)}")
        if order not in ("asc", "desc"):
            raise ValueError(f"order: {order!r} is not asc or desc")
        if offset < 0:
            raise ValueError(f"offset: {offset} is below 0")
        if limit is not None and not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit: {limit} is not within 1 .. {MAX_LIMIT}")
        self.text = text.strip().lower()
        self.health = health
        self.presence = presence
        self.deploy = deploy
        self.sort = sort
        self.order = order
        self.offset = offset
        self.limit = limit

    @classmethod
    def parse(cls, query: str) -> FleetQuery:
        """From a URL's query string (``ValueError`` naming the bad parameter)."""
        try:
            params = parse_qs(query, keep_blank_values=True, max_num_fields=20)
        except ValueError as err:
            raise ValueError(f"query: {err}") from err

        def one(name: str) -> str | None:
            values = params.get(name)
            return values[-1] if values else None

        def integer(name: str) -> int | None:
            raw = one(name)
            if raw is None or raw == "":
                return None
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"{name}: {raw[:40]!r} is not a whole number") from None

        return cls(
            text=one("q") or "",
            health=one("health") or None,
            presence=one("presence") or None,
            deploy=one("deploy") or None,
            sort=one("sort") or "node",
            order=one("order") or "asc",
            offset=integer("offset") or 0,
            limit=integer("limit"),
        )

    def matches(self, n: Mapping[str, Any]) -> bool:
        if self.health is not None and n.get("health") != self.health:
            return False
        if self.presence is not None and n.get("presence", "unknown") != self.presence:
            return False
        if self.deploy is not None and _deploy_state(n) != self.deploy:
            return False
        if not self.text:
            return True
        d = n.get("deployment") or {}
        haystack = [
            n["node"],
            n.get("software_version") or "",
            n.get("profile") or "",
            d.get("state") or "",
            d.get("detail") or "",
            d.get("rollout") or "",
        ]
        haystack += [b.get("bundle") or "" for b in n.get("bundles") or ()]
        return any(self.text in str(s).lower() for s in haystack)

    def select(self, nodes: Iterable[Mapping[str, Any]]) -> tuple[int, list[Mapping[str, Any]]]:
        """(how many matched, the requested page of them in order)."""
        key = SORT_KEYS[self.sort]
        known: list[Mapping[str, Any]] = []
        unknown: list[Mapping[str, Any]] = []
        for n in nodes:
            if self.matches(n):
                (unknown if key(n) is None else known).append(n)
        known.sort(key=lambda n: n["node"])  # ties by name, whatever the order
        known.sort(key=key, reverse=self.order == "desc")
        unknown.sort(key=lambda n: n["node"])
        rows = known + unknown
        end = None if self.limit is None else self.offset + self.limit
        return len(rows), rows[self.offset : end]


def fleet_page(snapshot: Mapping[str, Any], query: FleetQuery) -> dict[str, Any]:
    """``/api/fleet.json``'s body: ``snapshot`` (``FleetSnapshot.as_json()``) with its nodes
    filtered, sorted and paged by ``query``, and the fleet's counts."""
    nodes = snapshot.get("nodes") or []
    matched, rows = query.select(nodes)
    return {
        **snapshot,
        "counts": fleet_counts(nodes),
        "matched": matched,
        "offset": query.offset,
        "limit": query.limit,
        "nodes": rows,
    }
