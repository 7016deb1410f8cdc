"""One registry of a service's numbers, read three ways: status file, MQTT telemetry, Prometheus.

Both services use it (``edge-agentd`` and ``edge-agent-hub``); the examples are the daemon's.
Each part keeps its own counters where it counts them (the fleet uplink, the command processor,
the deployment manager, the MQTT inboxes, the snapshot store ...) and registers a reader here
under a prefix. :meth:`Metrics.values` flattens every reader into ``prefix.key`` numbers: the
``counters`` of the status file and of the telemetry message are that one dict, so the two can
never disagree. :meth:`Metrics.prometheus` renders the same numbers, and each group's, in
Prometheus' text exposition format for node_exporter's textfile collector
(``[daemon] prometheus_textfile``; see ``docs/deployment.md``) so that ``promtool check
metrics`` finds nothing to say::

    # HELP edge_agent_tick_duration_seconds How long a tick took: ...
    # TYPE edge_agent_tick_duration_seconds gauge
    edge_agent_tick_duration_seconds{quantile="0.99"} 0.00041
    edge_agent_group_agents{group="grid"} 1000

A name is ``edge_agent_`` + the flattened key with every character outside ``[a-zA-Z0-9_]``
replaced by ``_``, in base units (a ``_ms`` or ``_s`` word becomes ``_seconds``, the value
scaled; ``_c`` at the end ``_celsius``; ``_hz`` ``_hertz``); counters (values that only grow
while the process runs) end in ``_total`` (once), everything declared a gauge does not. A reader
may rename a key, label it or leave it out of Prometheus (:class:`Export`), and give each key its
own HELP text; keys ``base.PART`` beside their sum ``base`` (``parts``) become one family
``base{label="PART"}`` and the sum is left to PromQL. :meth:`Metrics.register_info` adds an
``_info`` gauge whose labels carry text (``edge_agent_build_info{version="..."} 1``). Readers
run on the loop's thread, when a status file, telemetry message or text file is written (at
most about once a second), never per tick.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from edge_agent.fsutil import write_atomic

Number = int | float
Reader = Callable[[], Mapping[str, object]]
GroupReader = Callable[[], Mapping[str, Mapping[str, object]]]
InfoReader = Callable[[], Mapping[str, str]]
#: ``({quantile: value}, sum, count)`` of a summary.
SummaryReader = Callable[[], tuple[Mapping[float, float], float, int]]
#: The samples of a labelled gauge family: ``(labels, value)`` each.
LabelledReader = Callable[[], Iterable[tuple[Mapping[str, str], object]]]

PROMETHEUS_PREFIX: Final = "edge_agent_"
_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")
#: Words of a key that name a unit, and the base unit (and factor) Prometheus wants instead.
_UNIT_WORDS: Final = {"ms": ("seconds", 1e-3), "s": ("seconds", 1.0), "hz": ("hertz", 1.0)}


@dataclass(frozen=True)
class Export:
    """How one key of a reader is exported to Prometheus, when not by the default rules.

    ``name``: the metric's name after ``edge_agent_`` (as is: no unit rewriting; ``_total`` is
    still added to a counter), or None to leave the key out of Prometheus (it stays in status
    and telemetry). ``scale`` multiplies the value (to a base unit); ``labels`` are added to the
    sample, so several keys can share one family (``quantile="0.5"``, ``quantile="0.99"``).
    """

    name: str | None
    help: str = ""
    scale: float = 1.0
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Source:
    prefix: str
    read: Reader
    gauges: frozenset[str]
    all_gauges: bool
    help: str
    describe: Mapping[str, str | Export]
    parts: Mapping[str, str]


@dataclass
class _Family:
    counter: bool
    help: str
    samples: list[tuple[str, Number]]
    kind: str = ""
    #: Lines after the samples (a summary's ``_sum`` and ``_count``).
    tail: list[str] = field(default_factory=list)


def _number(value: object) -> Number | None:
    """``value`` as a metric: ints and finite floats (bools as 0/1); None for anything else."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def _base_units(name: str) -> tuple[str, float]:
    """``name`` with unit words in base units (``tick_p99_ms`` -> ``tick_p99_seconds``, 1e-3)."""
    words = name.split("_")
    scale = 1.0
    for i, word in enumerate(words):
        unit = _UNIT_WORDS.get(word.lower())
        if unit is not None and i > 0:
            words[i], factor = unit
            scale *= factor
    if len(words) > 1 and words[-1].lower() == "c":
        words[-1] = "celsius"
    return "_".join(words), scale


def metric_name(key: str, *, counter: bool) -> str:
    """The Prometheus name of the flattened key ``key`` by the default rules (base units,
    ``_total`` on counters)."""
    name, _scale = _base_units(PROMETHEUS_PREFIX + _UNSAFE.sub("_", key))
    return f"{name}_total" if counter and not name.endswith("_total") else name


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{_label(v)}"' for k, v in pairs)


class Metrics:
    """A service's counters and gauges, by prefix (see the module docstring)."""

    def __init__(self) -> None:
        self._sources: list[_Source] = []
        self._groups: tuple[GroupReader, frozenset[str], str, Mapping[str, str]] | None = None
        self._infos: list[tuple[str, InfoReader, str]] = []
        self._summaries: list[tuple[str, SummaryReader, str]] = []
        self._labelled: list[tuple[str, LabelledReader, str]] = []

    def register(
        self,
        prefix: str,
        read: Reader,
        *,
        gauges: Iterable[str] | None = None,
        help: str = "",
        describe: Mapping[str, str | Export] | None = None,
        parts: Mapping[str, str] | None = None,
    ) -> None:
        """Add a reader: ``read()`` returns ``{key: value}``; non-numbers are left out.

        Every key is a counter (a number that only grows while the process runs) except those
        named in ``gauges``; ``gauges=("*",)`` makes every key a gauge. ``prefix`` may be empty
        (the keys are used as they are). ``describe``: per key, its HELP text or an
        :class:`Export`; other keys get ``help`` and their key. ``parts``: ``{base: label}``,
        keys ``base.PART`` export as ``base{label="PART"}`` and ``base`` (their sum) is left out.
        """
        names = frozenset(gauges or ())
        if any(s.prefix == prefix for s in self._sources):
            raise ValueError(f"metrics prefix {prefix!r} registered twice")
        self._sources.append(
            _Source(
                prefix,
                read,
                names - {"*"},
                "*" in names,
                help or prefix,
                describe or {},
                parts or {},
            )
        )

    def register_groups(
        self,
        read: GroupReader,
        *,
        gauges: Iterable[str],
        help: str,
        describe: Mapping[str, str] | None = None,
    ) -> None:
        """Per-group numbers ``{group: {key: value}}``, exported with a ``group`` label (and
        left out of :meth:`values`, whose readers already total them)."""
        self._groups = (read, frozenset(gauges), help, dict(describe or {}))

    def add_group_keys(self, gauges: Iterable[str], describe: Mapping[str, str]) -> None:
        """More per-group keys (those of a kind of group that came with a reload): which are
        gauges and what each means, added to those of :meth:`register_groups`."""
        if self._groups is None:
            raise ValueError("add_group_keys before register_groups")
        read, known, help_, texts = self._groups
        self._groups = (read, known | frozenset(gauges), help_, {**texts, **describe})

    def register_info(self, name: str, read: InfoReader, *, help: str) -> None:
        """A constant 1 named ``edge_agent_{name}_info`` whose labels are ``read()`` (text that
        is no number: the version, the profile), for Prometheus only."""
        self._infos.append((name, read, help))

    def register_summary(self, name: str, read: SummaryReader, *, help: str) -> None:
        """A summary ``edge_agent_{name}`` for Prometheus only: ``read()`` gives its quantiles,
        sum and count (base units: seconds)."""
        self._summaries.append((name, read, help))

    def register_labelled(self, name: str, read: LabelledReader, *, help: str) -> None:
        """A gauge family ``edge_agent_{name}`` for Prometheus only, whose samples carry labels
        of their own (``read()``: ``(labels, value)`` each; non-numbers are left out). The
        reader keeps its label sets bounded (a group and a measure of a closed vocabulary)."""
        self._labelled.append((name, read, help))

    def _flat(self) -> list[tuple[str, Number, bool, _Source]]:
        """(key, value, is_counter, source) of every registered number, in registration order."""
        out: list[tuple[str, Number, bool, _Source]] = []
        for src in self._sources:
            for key, raw in src.read().items():
                value = _number(raw)
                if value is None:
                    continue
                gauge = src.all_gauges or key in src.gauges
                out.append((f"{src.prefix}.{key}" if src.prefix else key, value, not gauge, src))
        return out

    def values(self) -> dict[str, Number]:
        """Every number as ``{prefix.key: value}`` (the status file's and telemetry's counters)."""
        return {key: value for key, value, _counter, _src in self._flat()}

    def prometheus(self, labels: Mapping[str, str] | None = None) -> str:
        """The text exposition format (version 0.0.4) of every number; ``labels`` on each."""
        base = list((labels or {}).items())
        families: dict[str, _Family] = {}

        def add(
            name: str, counter: bool, help_: str, extra: list[tuple[str, str]], value: Number
        ) -> None:
            family = families.get(name)
            if family is None:
                family = families[name] = _Family(counter, help_, [])
            elif family.counter != counter:
                return  # two keys that differ only in unsafe characters: keep the first
            family.samples.append((_labels([*base, *extra]), value))

        for info_name, read, help_ in self._infos:
            add(f"{PROMETHEUS_PREFIX}{info_name}_info", False, help_, list(read().items()), 1)
        for summary_name, read_summary, help_ in self._summaries:
            quantiles, total, count = read_summary()
            name = PROMETHEUS_PREFIX + summary_name
            suffix = _labels(base)
            families[name] = _Family(
                False,
                help_,
                [(_labels([*base, ("quantile", f"{q:g}")]), v) for q, v in quantiles.items()],
                kind="summary",
                tail=[
                    f"{name}_sum{{{suffix}}} {total}" if suffix else f"{name}_sum {total}",
                    f"{name}_count{{{suffix}}} {count}" if suffix else f"{name}_count {count}",
                ],
            )
        for key, value, counter, src in self._flat():
            local = key[len(src.prefix) + 1 :] if src.prefix else key
            spec = src.describe.get(local)
            head, _, part = local.rpartition(".")
            if local in src.parts:
                continue  # the sum of its parts, which PromQL adds up
            extra: list[tuple[str, str]] = []
            family_key = key
            if head in src.parts:
                extra.append((src.parts[head], part))
                spec = src.describe.get(head, spec)
                family_key = f"{src.prefix}.{head}" if src.prefix else head
            help_ = f"edge-agent {src.help}: {local}"
            if isinstance(spec, Export):
                if spec.name is None:
                    continue
                name = PROMETHEUS_PREFIX + spec.name
                name = f"{name}_total" if counter and not name.endswith("_total") else name
                add(
                    name,
                    counter,
                    spec.help or help_,
                    [*extra, *spec.labels.items()],
                    value * spec.scale if spec.scale != 1.0 else value,
                )
                continue
            name = metric_name(family_key, counter=counter)
            scale = _base_units(PROMETHEUS_PREFIX + _UNSAFE.sub("_", family_key))[1]
            add(name, counter, spec or help_, extra, value * scale if scale != 1.0 else value)
        for family_name, read_labelled, help_ in self._labelled:
            for sample_labels, raw in read_labelled():
                number = _number(raw)
                if number is not None:
                    add(
                        PROMETHEUS_PREFIX + family_name,
                        False,
                        help_,
                        list(sample_labels.items()),
                        number,
                    )
        if self._groups is not None:
            read_groups, gauges, help_, describe = self._groups
            for group, numbers in read_groups().items():
                for key, raw in numbers.items():
                    number = _number(raw)
                    if number is not None:
                        counter = key not in gauges
                        add(
                            metric_name(f"group.{key}", counter=counter),
                            counter,
                            describe.get(key, f"edge-agent {help_}: {key}"),
                            [("group", group)],
                            number,
                        )
        lines: list[str] = []
        for name, family in families.items():
            lines.append(f"# HELP {name} {_help(family.help)}")
            kind = family.kind or ("counter" if family.counter else "gauge")
            lines.append(f"# TYPE {name} {kind}")
            for label, value in family.samples:
                lines.append(f"{name}{{{label}}} {value}" if label else f"{name} {value}")
            lines.extend(family.tail)
        return "\n".join(lines) + "\n"

    def write_prometheus(self, path: Path, labels: Mapping[str, str] | None = None) -> None:
        """Replace ``path`` atomically (node_exporter never reads half a file); no fsync: the
        numbers are rewritten every interval and worthless after a crash. Mode 0644: node_exporter
        runs as another user."""
        write_atomic(path, self.prometheus(labels).encode(), durable=False, mode=0o644)


def _help(text: str) -> str:
    """HELP text as the format wants it: backslashes and newlines escaped."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")
