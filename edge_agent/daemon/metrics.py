"""One registry of the daemon's numbers, read three ways: status file, MQTT telemetry, Prometheus.

Each part keeps its own counters where it counts them (the fleet uplink, the command processor,
the deployment manager, the MQTT inboxes, the snapshot store ...) and registers a reader here
under a prefix. :meth:`Metrics.values` flattens every reader into ``prefix.key`` numbers: the
``counters`` of the status file and of the telemetry message are that one dict, so the two can
never disagree. :meth:`Metrics.prometheus` renders the same numbers, and each group's, in
Prometheus' text exposition format for node_exporter's textfile collector
(``[daemon] prometheus_textfile``; see ``docs/deployment.md``)::

    edge_agent_fleet_events_published_total 12
    edge_agent_tick_p99_ms 0.41
    edge_agent_group_agents{group="grid"} 1000

A name is ``edge_agent_`` + the flattened key with every character outside ``[a-zA-Z0-9_]``
replaced by ``_``; counters (values that only grow while the process runs) end in ``_total``
(once),
everything declared a gauge does not. Readers run on the loop's thread, when a status file,
telemetry message or text file is written (at most about once a second), never per tick.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edge_agent.fsutil import write_atomic

Number = int | float
Reader = Callable[[], Mapping[str, object]]
GroupReader = Callable[[], Mapping[str, Mapping[str, object]]]

PROMETHEUS_PREFIX: Final = "edge_agent_"
_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


@dataclass(frozen=True)
class _Source:
    prefix: str
    read: Reader
    gauges: frozenset[str]
    all_gauges: bool
    help: str


def _number(value: object) -> Number | None:
    """``value`` as a metric: ints and finite floats (bools as 0/1); None for anything else."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def metric_name(key: str, *, counter: bool) -> str:
    """The Prometheus name of the flattened key ``key``."""
    name = PROMETHEUS_PREFIX + _UNSAFE.sub("_", key)
    return f"{name}_total" if counter and not name.endswith("_total") else name


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """The daemon's counters and gauges, by prefix (see the module docstring)."""

    def __init__(self) -> None:
        self._sources: list[_Source] = []
        self._groups: tuple[GroupReader, frozenset[str], str] | None = None

    def register(
        self,
        prefix: str,
        read: Reader,
        *,
        gauges: Iterable[str] | None = None,
        help: str = "",
    ) -> None:
        """Add a reader: ``read()`` returns ``{key: value}``; non-numbers are left out.

        Every key is a counter (a number that only grows while the process runs) except those
        named in ``gauges``; ``gauges=("*",)`` makes every key a gauge. ``prefix`` may be empty
        (the keys are used as they are).
        """
        names = frozenset(gauges or ())
        if any(s.prefix == prefix for s in self._sources):
            raise ValueError(f"metrics prefix {prefix!r} registered twice")
        self._sources.append(_Source(prefix, read, names - {"*"}, "*" in names, help or prefix))

    def register_groups(self, read: GroupReader, *, gauges: Iterable[str], help: str) -> None:
        """Per-group numbers ``{group: {key: value}}``, exported with a ``group`` label (and
        left out of :meth:`values`, whose readers already total them)."""
        self._groups = (read, frozenset(gauges), help)

    def _flat(self) -> list[tuple[str, Number, bool, str]]:
        """(key, value, is_counter, help) of every registered number, in registration order."""
        out: list[tuple[str, Number, bool, str]] = []
        for src in self._sources:
            for key, raw in src.read().items():
                value = _number(raw)
                if value is None:
                    continue
                gauge = src.all_gauges or key in src.gauges
                out.append(
                    (f"{src.prefix}.{key}" if src.prefix else key, value, not gauge, src.help)
                )
        return out

    def values(self) -> dict[str, Number]:
        """Every number as ``{prefix.key: value}`` (the status file's and telemetry's counters)."""
        return {key: value for key, value, _counter, _help in self._flat()}

    def prometheus(self, labels: Mapping[str, str] | None = None) -> str:
        """The text exposition format (version 0.0.4) of every number; ``labels`` on each."""
        base = ",".join(f'{k}="{_label(v)}"' for k, v in (labels or {}).items())
        lines: list[str] = []
        seen: set[str] = set()

        def emit(name: str, counter: bool, help_: str, samples: list[tuple[str, Number]]) -> None:
            if name in seen:  # two keys that differ only in unsafe characters: keep the first
                return
            seen.add(name)
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {'counter' if counter else 'gauge'}")
            for label, value in samples:
                lines.append(f"{name}{{{label}}} {value}" if label else f"{name} {value}")

        for key, value, counter, help_ in self._flat():
            emit(
                metric_name(key, counter=counter),
                counter,
                f"edge-agent {help_}: {key}",
                [(base, value)],
            )
        if self._groups is not None:
            read, gauges, help_ = self._groups
            per_key: dict[str, list[tuple[str, Number]]] = {}
            for group, numbers in read().items():
                label = ",".join(x for x in (base, f'group="{_label(group)}"') if x)
                for key, raw in numbers.items():
                    number = _number(raw)
                    if number is not None:
                        per_key.setdefault(key, []).append((label, number))
            for key, samples in per_key.items():
                counter = key not in gauges
                emit(
                    metric_name(f"group.{key}", counter=counter),
                    counter,
                    f"edge-agent {help_}: {key}",
                    samples,
                )
        return "\n".join(lines) + "\n"

    def write_prometheus(self, path: Path, labels: Mapping[str, str] | None = None) -> None:
        """Replace ``path`` atomically (node_exporter never reads half a file); no fsync: the
        numbers are rewritten every interval and worthless after a crash. Mode 0644: node_exporter
        runs as another user."""
        write_atomic(path, self.prometheus(labels).encode(), durable=False, mode=0o644)
