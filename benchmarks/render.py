"""Render ``docs/performance.md`` from every stored benchmark result (``benchmarks/results/``).

    python benchmarks/render.py            # write docs/performance.md
    python benchmarks/render.py --check    # exit 1 if docs/performance.md is not what it renders

The page is one table per question (:data:`TABLES`), with a headline table first. Each table is a
declarative :class:`Table`: which benchmark's records it takes (``benchmark`` and ``where``),
what identifies a row (``key``; ``pivot`` spreads the records of one run that differ in one field,
e.g. the implementation, over the columns of one row), its :class:`Column` s, the command that
stores a run of it, and the rows it expects (``expect``): an expected row without a stored result
says "not measured yet" with the command to run. Adding a table is adding an entry to
:data:`TABLES`: no prose to write, the page is rendered.

Every row names its machine, CPU, commit and date, and the command that reproduces it. Where a
machine has several stored runs of one row, the newest (by date) is shown and the table says how
many older ones are stored. Nothing here measures: the numbers are the benchmarks' own.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_convert import FAMILIES, TABLE_METHODS, TF_FAMILIES, TORCH_FAMILIES
from result_store import REPO, read_all

PAGE = REPO / "docs" / "performance.md"
RENDER = "python benchmarks/render.py"
RECORD = "python benchmarks/record.py"
NOTES = "../benchmarks/notes"

Record = Mapping[str, Any]


@dataclass(frozen=True)
class Row:
    """One row of a table: its key's values and, per pivot value (``None`` without a pivot),
    the benchmark's record, with the stored lines they came from (for the provenance)."""

    key: Mapping[str, Any]
    records: Mapping[Any, Record]
    lines: Sequence[Record]

    def get(self, name: str, of: Any = None) -> Any:
        """Field ``name`` of the row's key, else of the record for pivot ``of`` (``a.b`` reads
        into a nested object)."""
        if name in self.key:
            return self.key[name]
        value: Any = self.records.get(of)
        for part in name.split("."):
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        return value


Getter = Callable[[Row], Any]


@dataclass(frozen=True)
class Column:
    """A column: its header, what it shows (a field of the record, or of the pivot value
    ``of``'s record; or a function of the row) and how (a format spec, ``suffix`` after it)."""

    header: str
    get: str | Getter
    fmt: str = ""
    of: Any = None
    suffix: str = ""

    def value(self, row: Row) -> Any:
        return self.get(row) if callable(self.get) else row.get(self.get, self.of)

    def cell(self, row: Row) -> str:
        return cell(self.value(row), self.fmt, self.suffix)


@dataclass(frozen=True)
class Ends:
    """Both ends of a headline's comparison over every row of its table (of the headline row's
    machine): the row's number (``value``, None where the row has none), shown with ``fmt`` and
    ``suffix``, the row named by ``label``; ``higher_is_better`` says which end is the weakest."""

    value: Getter
    label: Callable[[Row], str]
    fmt: str = ".2f"
    suffix: str = "x"
    higher_is_better: bool = True

    def text(self, rows: Iterable[Row]) -> str | None:
        """``weakest V (row), best V (row)`` over ``rows``; None without two numbers."""
        found = []
        for row in rows:
            try:
                value = self.value(row)
            except (TypeError, ValueError, ZeroDivisionError):
                value = None
            if isinstance(value, int | float):
                found.append((float(value), row))
        if len(found) < 2:
            return None
        found.sort(key=lambda item: item[0], reverse=not self.higher_is_better)
        (low, weak), (high, best) = found[0], found[-1]
        return (
            f"weakest {low:{self.fmt}}{self.suffix} ({self.label(weak)}), "
            f"best {high:{self.fmt}}{self.suffix} ({self.label(best)})"
        )


@dataclass(frozen=True)
class Headline:
    """A line of the headline table: ``label`` and ``text(row)`` of the row whose key has the
    values of ``match`` (one line per machine that measured it), and where the headline is a
    comparison, both of its ends over the table's rows (``ends``): the weakest row beside the
    best."""

    label: str
    text: Callable[[Row], str | None]
    match: Mapping[str, Any] = field(default_factory=dict)
    ends: Ends | None = None


@dataclass(frozen=True)
class Table:
    """One question, one table (see the module's docstring)."""

    id: str
    title: str
    scope: str
    benchmark: str
    command: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    where: Mapping[str, Any] = field(default_factory=dict)
    pivot: str | None = None
    expect: tuple[Mapping[str, Any], ...] = ()
    headlines: tuple[Headline, ...] = ()
    notes: str = ""
    store: str = ""

    def usage(self) -> str:
        """How to store a run of this table: ``store``, else ``command`` with what varies by
        expected row in capitals."""
        if self.store:
            return self.store
        names = {k: k.upper() for e in self.expect for k in e}
        return self.command.format(**names)

    def selects(self, line: Record) -> bool:
        if line.get("benchmark") != self.benchmark:
            return False
        result = line["result"]
        for name, want in self.where.items():
            have = result.get(name)
            if not (want(have) if callable(want) else have == want):
                return False
        return all(k in result for k in self.key) and (
            self.pivot is None or self.pivot in result
        )


# -- what a cell shows ---------------------------------------------------------------------------


def _measured_or_slope(r: Any, field: str, fmt: str) -> str:
    """``field`` (seconds) of the measured ``team_formation`` row, else the slope row's, marked."""
    if r.get(field, "team_formation") is not None:
        return cell(r.get(field, "team_formation"), fmt, " s")
    return cell(r.get(field, "team_formation_slope"), fmt, " s (slope)")


def cell(value: Any, fmt: str = "", suffix: str = "") -> str:
    """``value`` as table text: ``-`` for nothing, yes/no for booleans, ``fmt`` for numbers."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and fmt:
        return f"{value:{fmt}}{suffix}"
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    return f"{value}{suffix}".replace("|", "\\|").replace("\n", " ")


def ratio(a: tuple[Any, str], b: tuple[Any, str]) -> Getter:
    """Field ``a[1]`` of pivot ``a[0]``'s record over field ``b[1]`` of pivot ``b[0]``'s."""

    def get(row: Row) -> float | None:
        x, y = row.get(a[1], a[0]), row.get(b[1], b[0])
        if not isinstance(x, int | float) or not isinstance(y, int | float) or y == 0:
            return None
        return float(x) / float(y)

    return get


def best_of(name: str, pivots: Sequence[Any]) -> Getter:
    """The largest ``name`` among the records of ``pivots`` (the best peer)."""

    def get(row: Row) -> float | None:
        found = [row.get(name, p) for p in pivots]
        numbers = [float(v) for v in found if isinstance(v, int | float)]
        return max(numbers) if numbers else None

    return get


def over_best(a: tuple[Any, str], pivots: Sequence[Any]) -> Getter:
    """Pivot ``a[0]``'s field ``a[1]`` over the best of ``pivots``'s same field."""
    best = best_of(a[1], pivots)

    def get(row: Row) -> float | None:
        x, y = row.get(a[1], a[0]), best(row)
        if not isinstance(x, int | float) or y is None or y == 0:
            return None
        return float(x) / y

    return get


def first(*names: str) -> Getter:
    """The first of ``names`` that the record has (families measured in different ways)."""

    def get(row: Row) -> Any:
        for name in names:
            value = row.get(name)
            if value is not None:
                return value
        return None

    return get


def marked(name: str, fmt: str, flag: str, mark: str, of: Any = None) -> Getter:
    """``name`` formatted, with ``mark`` after it where the record's ``flag`` is true (an
    extrapolated rate)."""

    def get(row: Row) -> str | None:
        value = row.get(name, of)
        if value is None:
            return None
        return cell(value, fmt) + (mark if row.get(flag, of) else "")

    return get


def achieved_score(of: Any) -> Getter:
    """What pivot ``of``'s agents achieved in a closed loop: ``mean_reward`` (T-maze) or
    ``reach_rate`` (grid10), whichever its record has."""

    def get(row: Row) -> Any:
        for name in ("mean_reward", "reach_rate"):
            value = row.get(name, of)
            if value is not None:
                return value
        return None

    return get


def or_error(value: Getter, error: Getter, fmt: str) -> Getter:
    """``value`` formatted, or "failed: " and the error the record names instead."""

    def get(row: Row) -> str | None:
        found, failed = value(row), error(row)
        if found is not None:
            return cell(found, fmt)
        return f"failed: {failed}" if failed else None

    return get


def pair(a: Any, b: Any, fmt: str = ".1%") -> str | None:
    """``a / b``, each formatted (``-`` for one that is missing), or nothing without either."""
    if a is None and b is None:
        return None
    return f"{cell(a, fmt)} / {cell(b, fmt)}"


def mb(name: str, of: Any = None) -> Getter:
    def get(row: Row) -> float | None:
        value = row.get(name, of)
        return value / 2**20 if isinstance(value, int | float) else None

    return get


def measured_or_slope(name: str, fmt: str, suffix: str, measured: str = "merge") -> Getter:
    """Pivot ``measured``'s ``name``, else pivot ``extrapolated``'s marked as from the slope."""

    def get(row: Row) -> str | None:
        value = row.get(name, measured)
        if value is not None:
            return cell(value, fmt, suffix)
        value = row.get(name, "extrapolated")
        return None if value is None else cell(value, fmt, suffix) + " (slope)"

    return get


def dense_memory(row: Row) -> str | None:
    """The dense reference merge's deltas held plus its numpy peak (``merge`` rows)."""
    held, peak = row.get("dense_held_mb", "merge"), row.get("dense_peak_mb", "merge")
    return None if held is None or peak is None else cell(held + peak, ",.0f", " MiB")


# -- the rows expected per firmware profile -------------------------------------------------------


def firmware_profiles() -> tuple[dict[str, Any], ...]:
    """Every shipped profile (``firmware_profiles/*.toml``): name, description, workers."""
    out = []
    for path in sorted((REPO / "firmware_profiles").glob("*.toml")):
        data = tomllib.loads(path.read_text())
        cores = data.get("workers") or 2  # 0: one per CPU; the command then names 2
        out.append({"profile": data["name"], "description": data.get("description", ""),
                    "workers": cores, "world": "grid10", "policy_len": 1})
    return tuple(out)


# -- the tables ------------------------------------------------------------------------------------

PEERS = ("pymdp 0.0.7.1", "pymdp 1.0.4")
#: The int8 group without learning (bench_learning_peers.py --frozen).
INT8_OFF = "edge-agent int8 learning off"
LEARNING_EDGE = (
    "edge-agent float64 per-agent", "edge-agent int8 refresh 1", "edge-agent int8 refresh 100",
)
TF_PYTHON = "PYTHONPATH=.:tools .cache/tf-venv/bin/python"
#: The per-agent group kept on numpy where it steps in the compiled pass (the T-maze's pA).
PER_AGENT_NUMPY = "edge-agent float64 per-agent numpy"
#: The shared group in float64 refreshed every tick (the T-maze's in the compiled pass).
SHARED_FLOAT64 = "edge-agent float64 shared refresh 1"


#: The frozen float64 group's rate over pymdp 1.0.4's (bench_learning_peers.py --frozen).
FLOAT64_OFF_VS_PYMDP_104 = ratio(("edge-agent float64 learning off", "steps_per_s"),
                                 ("pymdp 1.0.4", "steps_per_s"))


def planned_alike(of: Any) -> Getter:
    """Pivot ``of``'s policies planned (their number) and whether every row of its case plans
    alike (``same_planning``: the policy set, gamma, the information gains)."""

    def get(row: Row) -> str | None:
        count, same = row.get("planning.policies", of), row.get("same_planning", of)
        if count is None or same is None:
            return None
        return f"{count} policies, {'same' if same else 'NOT the same'}"

    return get


#: The like-for-like ratio of the learning tables: edge-agent's per-agent group over pymdp 1.0.4.
PER_AGENT_VS_PYMDP_104 = ratio(("edge-agent float64 per-agent", "steps_per_s"),
                               ("pymdp 1.0.4", "steps_per_s"))


#: The numpy per-agent group's rate over pymdp 1.0.4's (where the compiled pass steps the group).
NUMPY_VS_PYMDP_104 = ratio((PER_AGENT_NUMPY, "steps_per_s"), ("pymdp 1.0.4", "steps_per_s"))


def per_agent_peer_columns(label: str) -> tuple[Column, ...]:
    """The per-agent learning rows' columns the open and the closed loop share: the ratio
    (headed ``per-agent / pymdp 1.0.4 (label)``), each side's rate, learning on / off."""
    return (
        Column(f"per-agent / pymdp 1.0.4 ({label})", PER_AGENT_VS_PYMDP_104, ".2f", suffix="x"),
        Column("edge-agent float64 per-agent", "steps_per_s", ",.0f",
               of="edge-agent float64 per-agent"),
        Column("pymdp 1.0.4", "steps_per_s", ",.0f", of="pymdp 1.0.4"),
        Column("pymdp 0.0.7.1", marked("steps_per_s", ",.0f", "extrapolated", " *",
                                       of="pymdp 0.0.7.1")),
        Column("learning on / off", "vs_learning_off", ".2f", suffix="x",
               of="edge-agent float64 per-agent"),
        Column("edge-agent float64, learning off", "steps_per_s", ",.0f",
               of="edge-agent float64 learning off"),
    )

#: The columns of the team repair tables after the daemons and agents (and the stall).
REPAIR_COLUMNS = (
    Column("slots vacated", "slots_vacated", ",d"),
    Column("agreed after the kill", "agreed_after_kill_s", ".2f", suffix=" s"),
    Column("bound", "bound_s", ".1f", suffix=" s"),
    Column("within it", "within_bound"),
    Column("others kept their slots", "others_kept_their_slots"),
)

TABLES: tuple[Table, ...] = (
    Table(
        id="agents-at-10-hz",
        title="Agents per firmware profile at 10 Hz",
        scope=(
            "The real daemon (`python -m edge_agent run`) on the profile named, one grid10 group "
            "(int8, one-step policies, the profile's history) stepped by `workers` processes, "
            "sim source and sink, 10 Hz: the largest group that plans every agent every tick "
            "with no overrun, no missed tick and a tick p99 within the 100 ms period (a probe "
            "and up to three runs scaled to a p99 of 90 ms), then twice that many agents "
            "planning within a 50 ms deadline. A profile's row is measured on that device: "
            "run its command there."
        ),
        benchmark="bench_planning.py",
        where={"bench": "daemon_deadline"},
        key=("profile", "world", "policy_len"),
        expect=firmware_profiles(),
        command=(
            f"{RECORD} bench_planning.py -- --daemon {{world}}:{{policy_len}} "
            "--workers {workers} --profile {profile}"
        ),
        columns=(
            Column("profile", "profile"),
            Column("world", "world"),
            Column("policy length", "policy_len"),
            Column("workers", "workers"),
            Column("agents planned every tick at 10 Hz", "fits_every_tick", ",d"),
            Column("2x agents, 50 ms deadline: tick p99", "tick_p99_ms", ".1f", suffix=" ms"),
            Column("overruns / missed", lambda r: f"{r.get('overruns')} / {r.get('missed')}"),
            Column("share planned a tick", "duty_cycle", ".2f"),
            Column("daemon CPU / wall", "daemon_cpu_per_wall", ".2f"),
        ),
        headlines=(
            Headline(
                "Agents a daemon plans for every tick at 10 Hz (grid10, x86-dev)",
                lambda r: f"{r.get('fits_every_tick'):,} agents",
                {"profile": "x86-dev"},
            ),
        ),
    ),
    Table(
        id="daemon-rss",
        title="Daemon RSS with and without MQTT, in the device's venv and with every extra",
        scope=(
            "The real daemon (`python -m edge_agent run`) on 1,000 grid10 int8 agents with "
            "64-step histories at 10 Hz (`x86-dev`), `[mqtt]` off, and on (connected to a "
            "loopback mosquitto, publishing telemetry); VmRSS after 20 s, the median of the "
            "run's rounds. In two venvs made by the script: `device`, the runtime requirements "
            "alone (what `scripts/demo` installs), and `extras`, every extra's beside them but "
            "TensorFlow's; the daemon's code is the tree's, byte-compiled as installed. The "
            "venv's libraries are dropped from the page cache before each run, so each daemon "
            "maps them as one started after boot (the pages a process maps of a library depend "
            "on what the page cache holds of it: [memory.md](memory.md)). Targets: 40 MB without "
            "MQTT, 45 MB with it."
        ),
        benchmark="bench_memory.py",
        where={"bench": "memory_summary", "this_rss_mb": lambda v: v is not None,
               "venv": lambda v: v in ("device", "extras")},
        key=("venv",),
        pivot="mqtt",
        expect=({"venv": "device"}, {"venv": "extras"}),
        command=f"{RECORD} bench_memory.py -- --rounds 2 --parts",
        store=f"{RECORD} bench_memory.py -- --rounds 2 --parts",
        columns=(
            Column("venv", "venv"),
            Column("RSS, MQTT off", "this_rss_mb", ".1f", of="off", suffix=" MB"),
            Column("RSS, MQTT on", "this_rss_mb", ".1f", of="on", suffix=" MB"),
            Column("what MQTT adds", lambda r: (
                r.get("this_rss_mb", "on") - r.get("this_rss_mb", "off")
                if r.get("this_rss_mb", "on") is not None
                and r.get("this_rss_mb", "off") is not None else None
            ), "+.1f", suffix=" MB"),
            Column("targets off / on", lambda r: pair(
                r.get("target_mb", "off"), r.get("target_mb", "on"), ".0f"
            ), suffix=" MB"),
            Column("met off / on", lambda r: pair(r.get("met", "off"), r.get("met", "on"))),
        ),
        headlines=(
            Headline(
                "Daemon RSS, 1,000 grid10 agents, the device's venv (targets 40 / 45 MB)",
                lambda r: (
                    f"{r.get('this_rss_mb', 'off'):.1f} MB without MQTT, "
                    f"{r.get('this_rss_mb', 'on'):.1f} MB with"
                ),
                {"venv": "device"},
                ends=Ends(lambda r: r.get("this_rss_mb", "on"), lambda r: f"{r.get('venv')}, MQTT",
                         fmt=".1f", suffix=" MB", higher_is_better=False),
            ),
        ),
    ),
    Table(
        id="memory-parts",
        title="What each part of the daemon's memory costs",
        scope=(
            "The same daemon built in one process as `edge-agent run` builds it (the device's "
            "venv, its libraries read afresh): its RSS after each phase, in MB added: the "
            "interpreter, `import numpy`, the daemon's modules, the config read (in a child "
            "process), the groups built (and with MQTT the fleet stack: its modules, the "
            "outbox, the link), 20 s of running (the kernel scratch and the history touched, the "
            "library pages the tick uses); then what the group's own accounting says it holds "
            "(docs/memory.md lists each part)."
        ),
        benchmark="bench_memory.py",
        where={"bench": "memory_parts"},
        key=("venv", "mqtt"),
        expect=({"venv": "device", "mqtt": "off"}, {"venv": "device", "mqtt": "on"}),
        command=f"{RECORD} bench_memory.py -- --rounds 2 --parts",
        store=f"{RECORD} bench_memory.py -- --rounds 2 --parts",
        columns=(
            Column("venv", "venv"),
            Column("MQTT", "mqtt"),
            Column("interpreter", "interpreter_added_mb", ".1f"),
            Column("numpy", "numpy_added_mb", "+.1f"),
            Column("daemon's modules", "modules_added_mb", "+.1f"),
            Column("config", "config_added_mb", "+.1f"),
            Column("groups built", "groups_added_mb", "+.1f"),
            Column("running", "running_added_mb", "+.1f"),
            Column("RSS", "running_mb", ".1f", suffix=" MB"),
            Column("agents' state", mb("group_state_bytes"), ".2f", suffix=" MB"),
            Column("kernel scratch", mb("scratch_bytes"), ".2f", suffix=" MB"),
            Column("model tables", mb("model_bytes"), ".2f", suffix=" MB"),
            Column("modules", "modules", "d"),
        ),
    ),
    Table(
        id="daemon-tick",
        title="The daemon's tick: p50 and p99",
        scope=(
            "The real daemon (`x86-dev`, sim source and sink, MQTT off) at 10 Hz for 30 s after "
            "READY; the status file's tick p50/p99 over the last 1,024 ticks, its RSS, the "
            "start to READY (and over a bare `python -c \"import numpy\"` in the same run), the "
            "final snapshot's size."
        ),
        benchmark="bench_daemon.py",
        where={"bench": "daemon"},
        key=("grid10_agents", "tmaze_agents", "tick_hz"),
        command=f"{RECORD} bench_daemon.py -- --seconds 30",
        columns=(
            Column("grid10 agents", "grid10_agents", ",d"),
            Column("T-maze agents", "tmaze_agents", ",d"),
            Column("tick", "tick_hz", ".0f", suffix=" Hz"),
            Column("tick p50", "tick_p50_ms", ".2f", suffix=" ms"),
            Column("tick p99", "tick_p99_ms", ".2f", suffix=" ms"),
            Column("overruns", "overruns", "d"),
            Column("RSS", "rss_mb", ".1f", suffix=" MB"),
            Column("start to READY", "ready_s", ".2f", suffix=" s"),
            Column("over `import numpy`", "ready_vs_baseline", ".1f", suffix="x"),
            Column("snapshot per 1,000 agents", mb("snapshot_bytes_per_1000_agents"), ".2f",
                   suffix=" MB"),
        ),
        headlines=(
            Headline(
                "Daemon tick p50 / p99, 1,000 grid10 agents at 10 Hz",
                lambda r: f"{r.get('tick_p50_ms'):.2f} / {r.get('tick_p99_ms'):.2f} ms",
                {"grid10_agents": 1000, "tmaze_agents": 0},
            ),
        ),
    ),
    Table(
        id="group-step",
        title="One group's step on one core",
        scope=(
            "An `AifAgentGroup` (int8, no history) stepping through its own built-in world on "
            "one thread; only `group.step(obs)` is timed. Agent-steps/s over wall and over "
            "process CPU time; the whole group's step p50/p99; against the float64 reference "
            "agent stepped one by one in the same process. Bytes per agent: "
            "`per_agent_nbytes(64)` of the group as built here, with the library's defaults: a "
            "64-step history of every state's belief (`history_beliefs = \"full\"`: 6,630 of "
            "grid10's 7,479 B) and the prior kept between ticks (399 B more). The daemon builds "
            "its groups with the compact history (`\"map\"`: the most probable state and its "
            "probability, 264 B) and without the prior where nothing reads it, so its status "
            "says 714 B for the same grid10 agent ([memory.md](memory.md#a-million-agents))."
        ),
        benchmark="bench_core.py",
        where={"workload": lambda w: w not in ("machine", "import"),
               "precision": "int8", "history_capacity": 0},
        key=("workload", "policy_len", "N"),
        command=f"{RECORD} bench_core.py",
        columns=(
            Column("workload", "workload"),
            Column("policy length", "policy_len"),
            Column("agents", "N", ",d"),
            Column("agent-steps/s", "agent_steps_per_s", ",.0f"),
            Column("CPU agent-steps/s", "cpu_agent_steps_per_s", ",.0f"),
            Column("step p50", "step_ms_p50", ".3f", suffix=" ms"),
            Column("step p99", "step_ms_p99", ".3f", suffix=" ms"),
            Column("bytes per agent (full history, prior kept)", "bytes_per_agent", ",d"),
            Column("x float64 reference", "ratio_vs_reference", ",.0f", suffix="x"),
        ),
        headlines=(
            Headline(
                "grid10 agent-steps/s, one core, 10,000 agents",
                lambda r: f"{r.get('agent_steps_per_s'):,.0f}",
                {"workload": "grid10", "policy_len": 1, "N": 10000},
                ends=Ends(lambda r: r.get("ratio_vs_reference"),
                          lambda r: f"{r.get('workload')} L{r.get('policy_len')} "
                                    f"N={r.get('N'):,} against the float64 reference",
                          fmt=",.0f"),
            ),
        ),
    ),
    Table(
        id="learning-like-for-like",
        title="Against pymdp with learning: like for like",
        scope=(
            "**Open loop**: every implementation learns from the same observations, tick after "
            "tick (drawn once under random actions; the closed loop is the next table), one "
            "thread each, every process and its threads pinned to the same one CPU "
            "(`pinned_cpu`): the reversal T-maze its reward likelihood (`pA1`), grid10 "
            "its moves (`pB0`). Like for like: **per-agent counts, tables following them every "
            "tick** on both sides: edge-agent's `AifAgentGroup` learning per agent (float64, "
            "each agent its own counts and tables) against pymdp 1.0.4 (`infer_parameters` each "
            "tick, batched, jitted) and pymdp 0.0.7.1 (`update_A` / `update_B` each tick, one "
            "`Agent` per agent; `*`: measured on at most 100 agents, its rate does not depend "
            "on `N`). Agent-steps/s; learning on / off: the per-agent group's rate over the same "
            "float64 group's without learning (what learning costs on its own); bytes per agent "
            "of per-agent learning as the memory budget counts them (edge-agent: the agent's "
            "state, its own tables and counts; pymdp 1.0.4: every array of the batched agent "
            "over `N`)."
        ),
        benchmark="bench_learning_peers.py",
        where={"bench": "learning-peers", "steps_per_s": lambda v: v is not None,
               "learned": lambda v: v in ("A1", "B0"), "loop": lambda v: v != "closed"},
        key=("world", "learned", "n"),
        pivot="impl",
        command=f"{RECORD} bench_learning_peers.py -- --agents 1,100,1000 --per-agent-only",
        columns=(
            Column("world", "world"),
            Column("learns", "learned"),
            Column("agents", "n", ",d"),
            *per_agent_peer_columns("like for like"),
            Column("bytes per agent: edge-agent", "state_bytes_per_agent", ",d",
                   of="edge-agent float64 per-agent"),
            Column("pymdp 1.0.4", "state_bytes_per_agent", ",d", of="pymdp 1.0.4"),
        ),
        headlines=(
            Headline(
                "Learning against pymdp 1.0.4, like for like (per-agent counts, every tick), "
                "grid10 learning `pB`, 1,000 agents",
                lambda r: f"{PER_AGENT_VS_PYMDP_104(r):.2f}x",
                {"world": "grid10", "learned": "B0", "n": 1000},
                ends=Ends(PER_AGENT_VS_PYMDP_104,
                          lambda r: f"{r.get('world')} {r.get('learned')} N={r.get('n'):,}"),
            ),
            Headline(
                "Learning against pymdp 1.0.4, like for like (per-agent counts, every tick), "
                "T-maze learning `pA`, 1,000 agents",
                lambda r: f"{PER_AGENT_VS_PYMDP_104(r):.2f}x",
                {"world": "tmaze", "learned": "A1", "n": 1000},
                ends=Ends(PER_AGENT_VS_PYMDP_104,
                          lambda r: f"{r.get('world')} {r.get('learned')} N={r.get('n'):,}"),
            ),
        ),
    ),
    Table(
        id="learning-closed-loop",
        title="Against pymdp with learning: closed loop, like for like",
        scope=(
            "**Closed loop**: each implementation's agents act in their own copy of the world, "
            "the world stepped by the actions they chose (one numpy world every process "
            "imports, `benchmarks/peers/world.py`, seed 0: the reversal T-maze, its rewarded arm "
            "swapping every 50 trials, learning its reward likelihood `pA1`; grid10 learning its "
            "moves `pB0`, respawn after the goal). **The world's step is inside the timed loop "
            "for every implementation** (the same work on every side). One thread, policy "
            "length 1, gamma 16, utility and state information gain, learning rate 1, each agent "
            "its own counts, the tables following them every tick: edge-agent's per-agent "
            "group (float64) against pymdp 1.0.4 (one batched `Agent`, `infer_parameters` in "
            "the jitted step) and pymdp 0.0.7.1 (`*`: measured on at most 100 agents, its rate "
            "does not depend on `N`). Agent-steps/s; learning on / off as in the open loop. "
            "Achieved: what the agents did over the first ticks that the per-agent group and "
            "pymdp 1.0.4 both ran (T-maze: mean reward per agent-step, +1 a reward, -1 a loss; "
            "grid10: goals reached per agent-step): the same algorithm, equal up to noise. "
            "The world draws into buffers reserved once, from each CDF row's support only "
            "(the same draws as the full rows; one agent in Python scalars): a step costs about "
            "15 us at N = 1 and 70 (grid10) to 110 us (T-maze) at N = 1,000, on every side "
            "(since frozen5 it makes only the uniforms its draws read: the T-maze's step at "
            "N = 1,000 a fifth fewer instructions). "
            "**At 5x, and why not more** (benchmarks/notes/learning.md, issue 58): the per-agent "
            "T-maze at N = 1,000, closed **5.02x** (three rounds; 5.01x in two, 5.25x in five), "
            "open **5.63x** (three; 5.08x in two), "
            "every worker pinned to one CPU, threads and all (`pinned_cpu`). Since the last "
            "reading (closed 4.96x and 5.07x, open 5.43x) a trial's start goes into the tick "
            "(`step(obs, starts=mask)`: the compiled pass puts `D` in those agents' prior, no "
            "reset's fills of their arrays) and the pass's count update and write-back move four "
            "values of four agents at a time (-3.9 % of its instructions closed, c15): ours "
            "2.81-2.93 M -> 3.10-3.16 M agent-steps/s closed, 3.21 -> 3.46-3.47 M open, while "
            "pymdp's read 566-579 k -> 602-627 k closed and 591 -> 617-682 k open this day (the "
            "ratio is within one process's run; its spread is the peer's as much as ours). The "
            "row is at 5x, not over it with margin: the world's step, timed for every side, is "
            "about 17 % of ours and 3 % of pymdp's, the group's Python around the tick about 10 % "
            "(health's sampled agents 2 % of the loop's instructions, in the pass and around it). "
            "The learning adds about 1,000 instructions an agent-step to the "
            "frozen tick's (each agent's table refreshed and its planning tables made every tick, "
            "the likelihood from each agent's own rows); the planning tables kept per agent were "
            "measured slower, and the tick's own table-free log and exp (vm13) 7 % slower on "
            "x86-64 (their divisions): "
            "not merged. Every other row is over 5x: the int8 "
            "shared `pA` every tick at N = 1,000 5.94x closed and 6.41x open. grid10's "
            "per-agent `pB` steps in the "
            "compiled pass since `2ff3a85` (N = 1: 7.84x at load 32, its numpy twin 2.7x; the "
            "pass alone about 25 us of CPU a tick, the group's Python around it about 20)."
        ),
        benchmark="bench_learning_peers.py",
        where={"bench": "learning-peers", "steps_per_s": lambda v: v is not None,
               "learned": lambda v: v in ("A1", "B0"), "loop": "closed"},
        key=("world", "learned", "n"),
        pivot="impl",
        expect=tuple(
            {"world": w, "learned": t, "n": n}
            for w, t in (("tmaze", "A1"), ("grid10", "B0")) for n in (1, 100, 1000)
        ),
        command=f"{RECORD} bench_learning_peers.py -- --agents 1,100,1000 --closed-loop "
                "--per-agent-only --no-reversal --repeats 2",
        store=f"{RECORD} bench_learning_peers.py -- --agents 1,100,1000 --closed-loop "
              "--per-agent-only --no-reversal --repeats 2",
        columns=(
            Column("world", "world"),
            Column("learns", "learned"),
            Column("agents", "n", ",d"),
            *per_agent_peer_columns("closed loop, like for like"),
            Column("achieved: edge-agent per-agent", achieved_score(
                "edge-agent float64 per-agent"), ".3f"),
            Column("pymdp 1.0.4", achieved_score("pymdp 1.0.4"), ".3f"),
            Column("over ticks", "achieved_ticks", ",d", of="edge-agent float64 per-agent"),
        ),
        headlines=(
            Headline(
                "Learning against pymdp 1.0.4, closed loop, like for like (per-agent counts, "
                "every tick, the world's step timed), grid10 learning `pB`, 1,000 agents",
                lambda r: f"{PER_AGENT_VS_PYMDP_104(r):.2f}x",
                {"world": "grid10", "learned": "B0", "n": 1000},
                ends=Ends(PER_AGENT_VS_PYMDP_104,
                          lambda r: f"{r.get('world')} {r.get('learned')} N={r.get('n'):,}"),
            ),
            Headline(
                "Learning against pymdp 1.0.4, closed loop, like for like (per-agent counts, "
                "every tick, the world's step timed), T-maze learning `pA`, 1,000 agents",
                lambda r: f"{PER_AGENT_VS_PYMDP_104(r):.2f}x",
                {"world": "tmaze", "learned": "A1", "n": 1000},
                ends=Ends(PER_AGENT_VS_PYMDP_104,
                          lambda r: f"{r.get('world')} {r.get('learned')} N={r.get('n'):,}"),
            ),
        ),
    ),
    Table(
        id="frozen-peers",
        title="Against pymdp, frozen models: the same side-by-side benchmark, nobody learning",
        scope=(
            "The worlds, loop and settings of the learning tables above (closed loop: each "
            "implementation's agents act in their own copy of the world, **the world's step "
            "timed** on every side; one thread pinned to one CPU, gamma 16, utility and state "
            "information gain, "
            "deterministic marginal action selection), **nobody learning**, at policy length 1 "
            "and 2 (every pair of actions, pymdp's `construct_policies`, the expected free energy "
            "summed over both steps), on the T-maze, grid10 and grid2f (two factors: a cue cell "
            "and two goal cells, trials of 5 steps, docs/simulations.md): edge-agent's group "
            "without learning, int8 (the daemon's everyday group: it measures the compiled tick "
            "against numpy when it is made and keeps the cheaper, `stepping` says which and why) "
            "and float64, against pymdp 1.0.4 (one batched `Agent`, the tick jitted) and pymdp "
            "0.0.7.1 (`*`: measured on at most 100 agents, its rate does not depend on `N`) "
            "without counts. Agent-steps/s of wall time; ratios over pymdp 1.0.4 and over the "
            "better peer, and over pymdp 1.0.4 in each process's CPU time (`same, CPU time`: the "
            "rows of a case run one after the other, each under the shared machine's load of "
            "its moment, which CPU time feels less than wall time; and one core each: XLA runs "
            "without its thread pool, but JAX dispatches asynchronously, so pymdp 1.0.4's Python "
            "thread and its computation overlap on a machine's second core: its process used "
            "1.1-1.75 s of CPU a second of wall time in the quiet run of 2026-11-29, edge-agent's "
            "1.0; where that column is empty the run predates it). "
            "Planned alike: the policies, their number, gamma and the information gains as each "
            "side's agents hold them, the same on every row of the case (`same`); first action "
            "optimal: the share of the int8 group's agents whose first action (every side sees "
            "the same first observations) is optimal within 1e-3 under pymdp 1.0.4's posterior "
            "over policies. Achieved: what the agents did over the ticks that the int8 group and "
            "pymdp 1.0.4 both ran (T-maze and grid2f: mean reward per agent-step, +1 a reward, "
            "-1 a loss; grid10: goals reached per agent-step): equal up to noise. **Which groups "
            "take the compiled tick**: a group that does not learn, plans policies of one or two "
            "steps every tick with deterministic marginal action selection on one process, whose "
            "model fits `tick.h`'s limits, and where the tick was measured faster than numpy when "
            "the group was made: the T-maze and grid2f at every N and policy length here, grid10 "
            "at N = 1 planning one step (about 2x cheaper than numpy's local "
            "one-step planner there; the local planner is the cheaper from about 64 agents up, so "
            "a grid10 group measures both paths up to 32 agents and steps the local planner "
            "unmeasured above: N = 100 and 1,000 on numpy); the others step numpy's kernels: "
            "grid10's local planner at many agents, grid10 planning two steps where numpy's "
            "sparse row maps were measured the cheaper (its `stepping` says which), a dense "
            "shared `B` that numpy multiplies for the whole batch in one BLAS call "
            "(docs/architecture.md, \"The compiled tick's contract\"; "
            "benchmarks/notes/learning.md, issue 58). edge-agent's groups "
            "measure their health as the daemon's do (a sample of at most 64 agents every 4th "
            "tick; a group on the compiled tick or a learning group's compiled pass has its "
            "pass measure the sample and fold it for the window, a group stepping numpy holds "
            "up to 8 measured ticks and measures them at once, docs/health.md); the world's "
            "step "
            "(`benchmarks/peers/world.py`) is the same numpy code in every implementation's "
            "process, drawing the same numbers. This table replaces the older `bench_peers.py` "
            "side by side (its rows of 2026-11-26 stay stored); `bench_peers.py` still counts a "
            "tick's numpy calls (`--count-ops`) and compares the actions' digests."
        ),
        benchmark="bench_learning_peers.py",
        where={"bench": "learning-peers", "steps_per_s": lambda v: v is not None,
               "learned": "none"},
        key=("loop", "world", "policy_len", "n"),
        pivot="impl",
        expect=tuple({"loop": "closed", "world": w, "policy_len": p, "n": n}
                     for w in ("tmaze", "grid10", "grid2f") for p in (1, 2)
                     for n in (1, 100, 1000)),
        command=f"{RECORD} bench_learning_peers.py -- --frozen --closed-loop --agents 1,100,1000 "
                "--policy-len 1,2 --no-reversal --repeats 2",
        store=f"{RECORD} bench_learning_peers.py -- --frozen --closed-loop --agents 1,100,1000 "
              "--policy-len 1,2 --no-reversal --repeats 2",
        columns=(
            Column("loop", "loop"),
            Column("world", "world"),
            Column("policy length", "policy_len"),
            Column("agents", "n", ",d"),
            Column("int8 / pymdp 1.0.4", "vs_pymdp_104", ".2f", suffix="x", of=INT8_OFF),
            Column("same, CPU time", "vs_pymdp_104_cpu", ".2f", suffix="x", of=INT8_OFF),
            Column("int8 / best peer", "vs_best_peer", ".2f", suffix="x", of=INT8_OFF),
            Column("edge-agent int8", "steps_per_s", ",.0f", of=INT8_OFF),
            Column("edge-agent float64", "steps_per_s", ",.0f",
                   of="edge-agent float64 learning off"),
            Column("pymdp 1.0.4", "steps_per_s", ",.0f", of="pymdp 1.0.4"),
            Column("pymdp 0.0.7.1", marked("steps_per_s", ",.0f", "extrapolated", " *",
                                           of="pymdp 0.0.7.1")),
            Column("planned alike", planned_alike(INT8_OFF)),
            Column("first action optimal under 1.0.4",
                   lambda r: r.records.get(INT8_OFF, {}).get("first_action_optimal_under_1.0.4"),
                   ".3f"),
            Column("achieved: int8", achieved_score(INT8_OFF), ".3f"),
            Column("pymdp 1.0.4", achieved_score("pymdp 1.0.4"), ".3f"),
            Column("over ticks", "achieved_ticks", ",d", of=INT8_OFF),
            Column("int8 stepping", "stepping", of=INT8_OFF),
        ),
        headlines=(
            Headline(
                "Against pymdp 1.0.4, frozen model, closed loop (the world's step timed), "
                "grid10, policy length 1, 1,000 agents",
                lambda r: (
                    f"int8 {r.get('vs_pymdp_104', INT8_OFF):.1f}x, float64 "
                    f"{FLOAT64_OFF_VS_PYMDP_104(r):.1f}x"
                ),
                {"loop": "closed", "world": "grid10", "policy_len": 1, "n": 1000},
                ends=Ends(lambda r: r.get("vs_pymdp_104", INT8_OFF),
                          lambda r: f"int8, {r.get('world')} L{r.get('policy_len')} "
                                    f"N={r.get('n'):,}", fmt=".1f"),
            ),
        ),
    ),
    Table(
        id="learning-native",
        title="Against pymdp with learning: the per-agent tick in one compiled pass",
        scope=(
            "The T-maze's per-agent learning (`pA1`, each agent its own counts, the table "
            "following them every tick) as the group steps it: **one compiled pass per tick "
            "over the agents** (`edge_agent/aif/kernels/native`, C built with the package; "
            "docs/learning.md, \"The compiled pass\"), beside the same group kept on numpy "
            "(`EDGE_AGENT_NATIVE_TICK=0`) and pymdp 1.0.4, in the same runs as the two tables "
            "above (open and closed loop, one thread, the same settings). The pass's "
            "posteriors, expected free energies, counts and tables equal the numpy stages' up to "
            "rounding, its actions optimal under their posterior "
            "(`tests/unit/core/test_native_pass.py`); in the closed loop its agents achieve what "
            "the numpy group's do. Agent-steps/s; compiled / numpy: the group's rate over its "
            "rate on numpy; bytes per agent as the budget counts them."
        ),
        benchmark="bench_learning_peers.py",
        where={"bench": "learning-peers", "steps_per_s": lambda v: v is not None,
               "world": "tmaze", "learned": "A1",
               "impl": lambda v: v in ("edge-agent float64 per-agent", PER_AGENT_NUMPY,
                                       "pymdp 1.0.4")},
        key=("loop", "n"),
        pivot="impl",
        expect=tuple({"loop": loop, "n": n} for loop in ("open", "closed") for n in (1, 100, 1000)),
        command=f"{RECORD} bench_learning_peers.py -- --agents 1,100,1000 --per-agent-only",
        store=f"{RECORD} bench_learning_peers.py -- --agents 1,100,1000 --per-agent-only; "
              f"{RECORD} bench_learning_peers.py -- --agents 1,100,1000 --closed-loop "
              "--per-agent-only --no-reversal --repeats 2",
        columns=(
            Column("loop", "loop"),
            Column("agents", "n", ",d"),
            Column("compiled / pymdp 1.0.4", PER_AGENT_VS_PYMDP_104, ".2f", suffix="x"),
            Column("edge-agent per-agent, compiled", "steps_per_s", ",.0f",
                   of="edge-agent float64 per-agent"),
            Column("the same on numpy", "steps_per_s", ",.0f", of=PER_AGENT_NUMPY),
            Column("pymdp 1.0.4", "steps_per_s", ",.0f", of="pymdp 1.0.4"),
            Column("compiled / numpy", "vs_numpy", ".2f", suffix="x",
                   of="edge-agent float64 per-agent"),
            Column("numpy / pymdp 1.0.4", NUMPY_VS_PYMDP_104, ".2f", suffix="x"),
            Column("achieved: compiled", achieved_score("edge-agent float64 per-agent"), ".3f"),
            Column("numpy", achieved_score(PER_AGENT_NUMPY), ".3f"),
            Column("bytes per agent", "state_bytes_per_agent", ",d",
                   of="edge-agent float64 per-agent"),
        ),
    ),
    Table(
        id="learning-shared",
        title="Against pymdp with learning: edge-agent's shared counts",
        scope=(
            "The same task and observations as the tables above, edge-agent learning with "
            "**shared** counts (every agent teaches one set of counts: a scope the peers do not "
            "have, so these ratios are not like for like), int8, its tables refreshed every tick "
            "(the peers' cadence) and every 100 ticks; and float64 refreshed every tick, the "
            "group as a user gets it: its learning ticks step in the **compiled pass** "
            "(docs/learning.md, \"The compiled pass\"; equal to the numpy stages up to "
            "rounding, `tests/unit/core/test_native_pass.py`), the T-maze's (`pA`) and, since "
            "issue 58's shared `pB`, grid10's (its rows' stepping says which path ran them); "
            "the int8 groups refreshed every tick in the pass too, their learned columns "
            "rounded through their codes (grid10's `pB` since issue 58's int8 shared `pB`, up "
            "to 32 agents: above, its columns stay fixed and numpy's local planner is the "
            "cheaper; the T-maze's `pA` since int8pa: a row stored before it says `numpy`), "
            "every 100 ticks with numpy. The peers as above (per-agent counts, every tick). "
            "Open loop, and closed where a closed-loop run stored these rows."
        ),
        benchmark="bench_learning_peers.py",
        where={"bench": "learning-peers", "steps_per_s": lambda v: v is not None,
               "learned": lambda v: v != "none"},
        key=("loop", "world", "n"),
        pivot="impl",
        command=f"{RECORD} bench_learning_peers.py -- --agents 1,1000",
        columns=(
            Column("loop", "loop"),
            Column("world", "world"),
            Column("agents", "n", ",d"),
            Column("int8 shared, refresh every tick", "steps_per_s", ",.0f",
                   of="edge-agent int8 refresh 1"),
            Column("/ best peer (shared vs per-agent, both every tick)",
                   over_best(("edge-agent int8 refresh 1", "steps_per_s"), PEERS), ".2f",
                   suffix="x"),
            Column("int8 shared, refresh every 100 ticks", "steps_per_s", ",.0f",
                   of="edge-agent int8 refresh 100"),
            Column("/ best peer (shared, every 100 vs per-agent, every tick)",
                   over_best(("edge-agent int8 refresh 100", "steps_per_s"), PEERS), ".2f",
                   suffix="x"),
            Column("float64 shared, refresh every tick", "steps_per_s", ",.0f",
                   of=SHARED_FLOAT64),
            Column("/ pymdp 1.0.4", ratio((SHARED_FLOAT64, "steps_per_s"),
                                          ("pymdp 1.0.4", "steps_per_s")), ".2f", suffix="x"),
            Column("/ learning off", ratio((SHARED_FLOAT64, "steps_per_s"),
                                           ("edge-agent float64 learning off", "steps_per_s")),
                   ".2f", suffix="x"),
            Column("stepping", "stepping", of=SHARED_FLOAT64),
        ),
    ),
    Table(
        id="learning-deltas",
        title="Learning deltas: bytes on the wire per hour",
        scope=(
            "What a learning group's reports to the fleet weigh (docs/fleet-learning.md, "
            "\"On the node\"): a group learning in a closed loop with its world at 10 Hz, what "
            "it learned taken every 600 ticks (`report_every_s = 60`) and made into encoded "
            "`LearningDelta` messages as the daemon makes them; the mean of 3 reports. A table "
            "part goes sparse within its columns when that is smaller (4 bytes a column, 8 a "
            "value not 0) and dense otherwise (4 bytes a column and a value). The bound is "
            "every column of the learned table moved, dense (4 bytes per value and per "
            "column, plus 1 KiB of envelope): it does not depend on the number of agents, whose "
            "increments are summed before they are sent. Bytes per hour scale with "
            "`1 / report_every_s` (600 s: a tenth)."
        ),
        benchmark="bench_learning_deltas.py",
        where={"bench": "learning-deltas"},
        key=("world", "learned", "scope", "agents"),
        command=f"{RECORD} bench_learning_deltas.py -- --agents 100,1000",
        columns=(
            Column("world", "world"),
            Column("learns", "learned"),
            Column("scope", "scope"),
            Column("agents", "agents", ",d"),
            Column("columns moved", "columns_per_report", ",.0f"),
            Column("of", "columns", ",d"),
            Column("values not 0", "nonzero_per_report", ",.0f"),
            Column("bytes per report", "bytes_per_report", ",d"),
            Column("bytes per hour", "bytes_per_hour", ",d"),
            Column("bound per hour", "bound_bytes_per_hour", ",d"),
            Column("take + encode", lambda r: r.get("take_ms") + r.get("encode_ms"), ".2f",
                   suffix=" ms"),
        ),
    ),
    Table(
        id="learning-tick",
        title="What learning costs the daemon's tick",
        scope=(
            "One group as the daemon builds it from a config with a `[groups.learning]` table "
            "(shared counts, int8) against the same group without it, both ticked as the daemon "
            "ticks them (the world's step and the agents') in alternating rounds on one thread; "
            "the ratio is the median over rounds of the learning tick's time over the plain "
            "one's, its refreshes included."
        ),
        benchmark="bench_daemon.py",
        where={"bench": "daemon-learning"},
        key=("world", "learning", "agents"),
        command=f"{RECORD} bench_daemon.py -- --learning-only",
        columns=(
            Column("world", "world"),
            Column("learns", "learning"),
            Column("agents", "agents", ",d"),
            Column("plain agent-steps/s", "plain_agent_steps_per_s", ",.0f"),
            Column("learning agent-steps/s", "learning_agent_steps_per_s", ",.0f"),
            Column("learning / plain tick", "ratio", ".2f", suffix="x"),
        ),
    ),
    Table(
        id="learning-shared-every-tick",
        title="Shared counts refreshed every tick: what learning costs",
        scope=(
            "The shared rows: one int8 group whose agents all teach **one set of "
            "counts**, the tables following the counts **every tick** (pymdp's cadence), "
            "learning rate 1 (the T-maze its reward modality `A1`, grid10 its transitions `B0`, "
            "prior counts twice the table plus 0.5 on its support; the slippery grid its "
            "transitions from counts plus 0.5 on **every** entry, so that `B` is dense and every "
            "update moves the columns the agents' moves touched, which a refresh brings into "
            "the compiled tables without a compile; grid10's transitions also from counts plus "
            "0.5 on every target some move reaches from the column's state, `reach`: a sparse "
            "`B` whose touched columns move within that support, refreshed by their weights "
            "alone), against the same group without learning "
            "on the learning group's tables and beliefs, in alternating rounds on the same "
            "observations (drawn once from the world under the learning group's actions), one "
            "thread. The ratio is the median over rounds of the learning tick's time over the "
            "plain one's. The like-for-like comparison with pymdp 1.0.4 is in "
            "[learning.md](learning.md#what-it-costs-against-pymdp)."
        ),
        benchmark="bench_learning.py",
        where={"bench": "learning", "refresh_every": 1},
        key=("world", "learned", "prior", "agents"),
        expect=tuple(
            {"world": w, "learned": t, "prior": p, "agents": n}
            for w, t, p in (("tmaze", "A1", "support"), ("grid10", "B0", "support"),
                            ("grid-slippery", "B0", "dense"), ("grid10", "B0", "reach"))
            for n in (1, 100, 1000)
        ),
        command=f"{RECORD} bench_learning.py -- --cases tmaze-A1-every-1,grid10-B0-every-1,"
                "grid-slippery-B0-every-1-dense,grid10-B0-every-1-reach --agents 1,100,1000",
        store=f"{RECORD} bench_learning.py -- --cases tmaze-A1-every-1,grid10-B0-every-1,"
              "grid-slippery-B0-every-1-dense,grid10-B0-every-1-reach --agents 1,100,1000",
        columns=(
            Column("world", "world"),
            Column("learns", "learned"),
            Column("prior counts on", "prior"),
            Column("agents", "agents", ",d"),
            Column("learning off, agent-steps/s", "plain_agent_steps_per_s", ",.0f"),
            Column("learning on, agent-steps/s", "learning_agent_steps_per_s", ",.0f"),
            Column("on / off tick", "ratio", ".2f", suffix="x"),
            Column("refresh ms", "refresh_ms", ".2f"),
        ),
    ),
    Table(
        id="learning-writes",
        title="Storage writes with learning: an hour of per-agent learning in a snapshot",
        scope=(
            "grid10 agents learning their transitions, each its own counts (`[groups.learning] "
            "B = \"all\"`, `scope = \"per_agent\"`, float64, prior the model's `B`, learning "
            "rate 1, every tick), stepped in one process for the updates of an hour at 10 Hz; "
            "their state written as the daemon writes a snapshot, with the counts stored as what "
            "moved from the prior and the previous posteriors only where they differ from the "
            "beliefs (now) and both whole (before), zlib where it saves a tenth (arrays of 4 KiB "
            "and more: 200 agents' are). Bytes of the `learn.*` arrays per agent, the bound on "
            "them (before compression: every entry an update can reach moved, the support of "
            "`B`, 4 bytes of index and 8 of float64 count each, and every agent's previous "
            "posterior stored), and what 200 such agents add per hour at the `pi4-4gb` "
            "profile's two snapshots an hour (the daemon without learning keeps to about 1 MB/h "
            "in all)."
        ),
        benchmark="bench_writes.py",
        where={"bench": "writes", "case": "learning_hour",
               "bound_learn_bytes_per_agent": lambda v: v is not None},
        key=("agents", "ticks"),
        command=f"{RECORD} bench_writes.py -- --cases learning_hour",
        columns=(
            Column("agents run", "agents", ",d"),
            Column("ticks (hours at 10 Hz)", lambda r: (
                f"{r.get('ticks'):,d} ({r.get('hours_at_10hz'):.2f} h)"
            )),
            Column("moved entries per agent", "moved_entries_per_agent", ",.0f"),
            Column("learn bytes per agent: moved", "learn_bytes_per_agent", ",.0f"),
            Column("whole (before)", "learn_bytes_per_agent_whole", ",.0f"),
            Column("bound per agent", "bound_learn_bytes_per_agent", ",d"),
            Column("200 agents, MB/h: moved", "learn_mb_per_h_200_agents", ".2f"),
            Column("whole (before)", "learn_mb_per_h_200_agents_whole", ".2f"),
            Column("bound", "bound_learn_mb_per_h_200_agents", ".2f"),
        ),
    ),
    Table(
        id="converter-families",
        title="Converter accuracy by model family",
        scope=(
            "Each family's float model built and trained here (scikit-learn's bundled digits, "
            "wine and breast-cancer data; the sensor world for the recurrent ones), converted by "
            "`edge-agent-host convert` (`--mode auto`: int8 where it pays, else the float model "
            "is bundled) and, beside it, by onnxruntime's own `quantize_static` with its "
            "defaults (\"theirs\"; for a Keras family, TensorFlow's own `TFLiteConverter`, "
            "post-training integer quantization with float fallback). Top-1 agreement with the "
            "float model on held-out inputs; label accuracy where the data have labels. A Keras "
            "row shows the converter's full-integer mode (`convert tflite`)."
        ),
        benchmark="bench_convert.py",
        where={"bench": None, "family": lambda f: f is not None},
        key=("family",),
        expect=(
            *({"family": f, "python": "python"} for f in FAMILIES),
            *({"family": f, "python": TF_PYTHON} for f in (*TF_FAMILIES, *TORCH_FAMILIES)),
        ),
        command="{python} benchmarks/record.py bench_convert.py -- --families {family}",
        store=f"{RECORD} bench_convert.py -- --families FAMILY,...",
        columns=(
            Column("family", "family"),
            Column("model", "model"),
            Column("float bytes", "float_bytes", ",d"),
            Column("ours: mode, bundled", lambda r: (
                f"{r.get('ours_mode')}, {r.get('ours_bundled')}" if r.get("ours_mode")
                else f"full-integer, {r.get('ours_full_bundled')}"
                if r.get("ours_full_bundled") else None
            )),
            Column("ours: int8 / float size", first("ours_ratio", "ours_full_ratio"), ".2f"),
            Column("ours: int8 top-1 vs float", first("ours_top1", "ours_full_top1"), ".1%"),
            Column("label accuracy: float / ours int8", lambda r: pair(
                first("label_accuracy.float", "label_accuracy_float")(r),
                first("label_accuracy.int8", "ours_full_label_accuracy")(r),
            )),
            Column("theirs: top-1 vs float", or_error(
                first("ort_static_top1", "tf_int8_fallback_top1"),
                first("ort_static_error", "tf_int8_fallback_error"), ".1%",
            )),
            Column("theirs: label accuracy", first(
                "ort_static_label_accuracy", "tf_int8_fallback_label_accuracy"
            ), ".1%"),
        ),
        notes=(
            "Keras and torch families are stored from the venv `scripts/test-tf` makes "
            "(TensorFlow; torch and onnxscript installed into it for the torch families): "
            f"`{TF_PYTHON} benchmarks/record.py bench_convert.py -- --families keras-mlp,...`."
        ),
        headlines=(
            Headline(
                "Converter, digits MLP: int8 top-1 agreement with float",
                lambda r: (
                    f"{r.get('ours_top1'):.1%} at {r.get('ours_ratio'):.0%} of the float size"
                ),
                {"family": "mlp"},
                ends=Ends(lambda r: r.get("ours_top1"), lambda r: str(r.get("family")),
                          fmt=".1%", suffix=""),
            ),
        ),
    ),
    Table(
        id="converter-methods",
        title="Converter accuracy by family and calibration method",
        scope=(
            "Per ONNX family and method, the converter without `--force` (`bundled`: whether "
            "the int8 or the float model went into the bundle) beside onnxruntime's own call "
            "with the same calibration method (`quantize_static`, or `quantize_dynamic`): label "
            "accuracy on the held-out set (the float model's in its own column) and top-1 "
            "agreement with float."
        ),
        benchmark="bench_convert.py",
        where={"bench": "table", "method": lambda m: m is not None},
        key=("family", "method"),
        expect=tuple({"family": f, "method": m} for f in FAMILIES for m in TABLE_METHODS),
        command=f"{RECORD} bench_convert.py -- --table --families {{family}}",
        store=f"{RECORD} bench_convert.py -- --table",
        columns=(
            Column("family", "family"),
            Column("method", "method"),
            Column("float label accuracy", "label_accuracy_float", ".1%"),
            Column("ours: mode, bundled", lambda r: f"{r.get('ours_mode')}, "
                   f"{r.get('ours_bundled')}"),
            Column("ours: int8 / float size", "ours_ratio", ".2f"),
            Column("ours: int8 label accuracy", "ours_label_accuracy", ".1%"),
            Column("ours: int8 top-1 vs float", "ours_top1", ".1%"),
            Column("onnxruntime: int8 / float size", "ort_ratio", ".2f"),
            Column("onnxruntime: label accuracy", or_error(
                first("ort_label_accuracy"), first("ort_error"), ".1%")),
            Column("onnxruntime: top-1 vs float", "ort_top1", ".1%"),
        ),
    ),
    Table(
        id="hub-1000-nodes",
        title="The hub at 1,000 nodes",
        scope=(
            "One loopback mosquitto, simulated nodes (the real fleet link, protocol, command "
            "verification and deployment transfer; no agents) in several processes, and "
            "`edge-agent-hub run` on SQLite: the registry filled from a fresh database and "
            "after a restart, a ~1 MB signed bundle rolled out to every node in waves of 1, "
            "10 %, 50 %, 100 % (bytes the broker took in and sent), a bundle that 5 % of nodes "
            "fail (where the rollout halted, nodes touched beyond its first wave), and the "
            "HTTP side."
        ),
        benchmark="bench_hub_scale.py",
        where={"nodes": lambda n: n is not None},
        key=("nodes",),
        pivot="bench",
        expect=({"nodes": 1000},),
        command=f"{RECORD} bench_hub_scale.py -- --nodes {{nodes}}",
        columns=(
            Column("nodes", "nodes", ",d"),
            Column("registry filled", "first_s", ".1f", of="registry", suffix=" s"),
            Column("after a restart", "after_restart_s", ".1f", of="registry", suffix=" s"),
            Column("rollout to every node", "wall_s", ".1f", of="rollout", suffix=" s"),
            Column("nodes ok", "ok", ",d", of="rollout"),
            Column("broker in / out", lambda r: (
                f"{r.get('broker_bytes_received', 'rollout') / 1e6:.1f} / "
                f"{r.get('broker_bytes_sent', 'rollout') / 1e6:,.0f} MB"
                if r.get("broker_bytes_sent", "rollout") is not None else None
            )),
            Column("5 % failing: halted in wave", "halted_in_wave", "d", of="halt"),
            Column("touched beyond it", "nodes_beyond_first_wave_touched", "d", of="halt"),
            Column("hub peak RSS", best_of("hub_rss_peak_mb", (
                "registry", "rollout", "halt", "http")), ".1f", suffix=" MB"),
            Column("`/metrics`", "metrics_ms", ".1f", of="http", suffix=" ms"),
        ),
        headlines=(
            Headline(
                "The hub at 1,000 nodes: registry filled, 1 MB rollout to every node",
                lambda r: (
                    f"{r.get('first_s', 'registry'):.1f} s, {r.get('wall_s', 'rollout'):.1f} s"
                ),
                {"nodes": 1000},
            ),
        ),
    ),
    Table(
        id="health-cost",
        title="What a group's health measures cost its tick",
        scope=(
            "Two int8 groups of the same built-in model step the same recorded walk of its "
            "world in alternating rounds from the same beliefs, one without its health part "
            "(`AifAgentGroup(health=False)`), one with it (every 4th tick, a sample of at most "
            "64 agents, docs/health.md); one thread. The ratio is the median over rounds of "
            "health time / plain time: the same semantics, cadence and scope on both sides."
        ),
        benchmark="bench_health.py",
        where={"bench": "health-cost"},
        key=("world", "n"),
        expect=({"world": "tmaze", "n": 10000}, {"world": "grid10", "n": 10000}),
        command=f"{RECORD} bench_health.py -- --agents 100,10000",
        columns=(
            Column("world", "world"),
            Column("agents", "n", ",d"),
            Column("tick without health", "plain_ms", ".2f", suffix=" ms"),
            Column("with health", "health_ms", ".2f", suffix=" ms"),
            Column("ratio", "ratio", ".3f", suffix="x"),
            Column("agents measured a measured tick", "measured_agents", "d"),
            Column("measured every", "every_ticks", "d", suffix=" ticks"),
        ),
        headlines=(
            Headline(
                "Health measures' cost, 10,000 grid10 agents (with / without)",
                lambda r: f"{r.get('ratio'):.3f}x",
                {"world": "grid10", "n": 10000},
                ends=Ends(lambda r: r.get("ratio"),
                          lambda r: f"{r.get('world')} N={r.get('n'):,}", fmt=".3f",
                          higher_is_better=False),
            ),
        ),
    ),
    Table(
        id="health-cost-small",
        title="What a small group's health measures cost its tick, held and measured at once",
        scope=(
            "A group of one agent steps a recorded walk of its world in alternating rounds from "
            "the same beliefs and counts: without its health part, with it as it is (a sample "
            "of fewer than 8 agents: its measured ticks, every 4th, held and measured 8 at "
            "once, docs/health.md), and with each measured tick measured when it happens (the "
            "part with `holds = False`, as before the holding); frozen: an int8 group; pA: a "
            "float64 group learning its own `pA` of every modality, its tables following every "
            "tick; pB: its own `pB` (grid10). One thread; medians over rounds of a tick's mean "
            "time and of the ratios."
        ),
        benchmark="bench_health.py",
        where={"bench": "health-cost-small"},
        key=("world", "learning", "n"),
        expect=tuple({"world": w, "learning": k, "n": 1} for w, kinds in (
            ("tmaze", ("frozen", "pA")), ("grid10", ("frozen", "pA", "pB"))) for k in kinds),
        command=f"{RECORD} bench_health.py -- --parts small --rounds 9",
        columns=(
            Column("world", "world"),
            Column("learning", "learning"),
            Column("agents", "n", ",d"),
            Column("tick without health", "plain_us", ".1f", suffix=" us"),
            Column("held", "held_us", ".1f", suffix=" us"),
            Column("each measured when it happens", "each_us", ".1f", suffix=" us"),
            Column("held / without", "held_ratio", ".2f", suffix="x"),
            Column("each / without", "each_ratio", ".2f", suffix="x"),
            Column("held / each", "held_vs_each", ".2f", suffix="x"),
        ),
    ),
    Table(
        id="drift-false-alarms",
        title="The drift alarm on a world that does not change",
        scope=(
            "16 int8 agents stepped in the very world their model describes, `seeds` runs "
            "of `ticks` ticks; every drift alarm raised is a false one. The detector "
            "(docs/health.md) is updated once per measured tick (every 4th); with no alarm, "
            "the 95 % upper bound on the rate is the rule of three, 3 / updates."
        ),
        benchmark="bench_health.py",
        where={"bench": "drift-false-alarms"},
        key=("world",),
        expect=({"world": "tmaze"}, {"world": "grid10"}),
        command=f"{RECORD} bench_health.py -- --agents 100,10000",
        columns=(
            Column("world", "world"),
            Column("runs x ticks", lambda r: f"{r.get('seeds')} x {r.get('ticks'):,}"),
            Column("detector updates", "updates", ",d"),
            Column("false alarms", "alarms", "d"),
            Column("per 100,000 updates", "alarms_per_100k_updates", ".2f"),
            Column("95 % upper bound", "upper95_per_100k_updates", ".1f"),
            Column("tolerance / allowance / threshold", lambda r: (
                f"{r.get('tolerance')} nats / {r.get('allowance')} / {r.get('threshold')}"
            )),
        ),
    ),
    Table(
        id="shadow-cost",
        title="What a shadow costs the group's tick and memory budget",
        scope=(
            "Two live int8 groups of the world's model step the same recorded walk in "
            "alternating rounds from the same beliefs, one alone, one with a shadow of a "
            "candidate beside it (`worse` or `close`, as in the next table), stepped as the "
            "daemon steps it (`ShadowRun`: the same observations and episode starts, the live "
            "actions committed; docs/health.md \"Shadow evaluation\"); one thread. The ratio "
            "is the median over rounds of shadowed / alone. Bytes are what the candidate "
            "reserves in a memory budget beside the live group: its agents (as the budget "
            "counts them, per agent; the live group's beside it) and its tables (0 for a "
            "candidate of the live model: counted once)."
        ),
        benchmark="bench_health.py",
        where={"bench": "shadow-cost"},
        key=("world", "n", "candidate"),
        expect=tuple(
            {"world": w, "n": n, "candidate": c}
            for w in ("tmaze", "grid10")
            for n in (100, 1000)
            for c in ("worse", "close")
        ),
        command=f"{RECORD} bench_health.py -- --parts shadow --agents 100,1000",
        columns=(
            Column("world", "world"),
            Column("agents", "n", ",d"),
            Column("candidate", "candidate"),
            Column("tick alone", "live_ms", ".3f", suffix=" ms"),
            Column("with the shadow", "shadow_ms", ".3f", suffix=" ms"),
            Column("ratio", "ratio", ".2f", suffix="x"),
            Column("shadow bytes / agent", "shadow_bytes_per_agent", ",d"),
            Column("live bytes / agent", "live_bytes_per_agent", ",d"),
            Column("shadow's tables", "shadow_model_bytes", ",d", suffix=" B"),
        ),
        headlines=(
            Headline(
                "A shadow's cost, 1,000 grid10 agents, close candidate (tick with / without)",
                lambda r: f"{r.get('ratio'):.2f}x",
                {"world": "grid10", "n": 1000, "candidate": "close"},
                ends=Ends(lambda r: r.get("ratio"),
                          lambda r: f"{r.get('world')} N={r.get('n'):,} {r.get('candidate')}",
                          higher_is_better=False),
            ),
        ),
    ),
    Table(
        id="shadow-power",
        title="How many windows a shadow needs for the right verdict, paired and unpaired",
        scope=(
            "Share of runs (`seeds`, different seeds) whose verdict is the right one after K "
            "windows of 16 ticks, K = 5, 10, 20, 40 (each run's first K windows). Paired: the "
            "candidate as a shadow beside the live group, the hub's shadow criterion (one-sided "
            "Wilcoxon signed-rank on the windows' differences); unpaired: the live gate "
            "(one-sided Mann-Whitney) on K health windows of a group running the candidate in "
            "its own world against K of a group running the live model in another. Both "
            "`max_increase=0.3` at alpha 0.05, minimum samples 3 (the defaults, 20 windows and "
            "50 samples, call the smaller K inconclusive). Candidates: `worse` (T-maze reward "
            "arms swapped; grid10 moves mirrored in B) should fail; `same` (the live model) and "
            "`close` (T-maze rewarding 0.95 instead of 0.98; grid10 seeing its cell with noise "
            "0.15 instead of 0.1) should pass. Mean diff: median over runs of the mean "
            "difference (paired) or of the median shift (unpaired), nats."
        ),
        benchmark="bench_health.py",
        where={"bench": "shadow-power"},
        key=("world", "n", "candidate"),
        pivot="test",
        expect=tuple(
            {"world": w, "n": n, "candidate": c}
            for w in ("tmaze", "grid10")
            for n in (100,)
            for c in ("worse", "same", "close")
        ),
        command=f"{RECORD} bench_health.py -- --parts shadow --agents 100,1000",
        columns=(
            Column("world", "world"),
            Column("agents", "n", ",d"),
            Column("candidate", "candidate"),
            Column("right verdict", "expected", of="paired"),
            *(
                Column(f"paired, K={k}", f"correct.{k}", ".0%", of="paired")
                for k in (5, 10, 20, 40)
            ),
            *(
                Column(f"unpaired, K={k}", f"correct.{k}", ".0%", of="unpaired")
                for k in (5, 10, 20, 40)
            ),
            Column("mean diff paired / unpaired", lambda r: (
                f"{cell(r.get('mean_diff', 'paired'), '+.3f')} / "
                f"{cell(r.get('mean_diff', 'unpaired'), '+.3f')}"
            )),
            Column("runs", "seeds", "d", of="paired"),
        ),
    ),
    Table(
        id="drift-delay",
        title="The drift alarm on a world that changes",
        scope=(
            "16 int8 agents with the frozen model of `tmaze-reversal` in its world, whose "
            "rewarded arm swaps after `reverse_every` trials of 3 ticks (the model's arm is "
            "then the losing one): ticks from the first reversal to the alarm, per run."
        ),
        benchmark="bench_health.py",
        where={"bench": "drift-delay"},
        key=("world", "reverse_every"),
        expect=({"world": "tmaze-reversal", "reverse_every": 20},),
        command=f"{RECORD} bench_health.py -- --agents 100,10000",
        columns=(
            Column("world", "world"),
            Column("reversal at tick", "reversal_tick", "d"),
            Column("runs detected", lambda r: f"{r.get('detected')} of {r.get('seeds')}"),
            Column("median delay", "median_delay_ticks", "", suffix=" ticks"),
            Column("delays", lambda r: ", ".join(str(d) for d in r.get("delays_ticks") or [])),
            Column("alarms before the reversal", "alarms_before", "d"),
        ),
    ),
    Table(
        id="hub-health",
        title="Health telemetry on the hub at 1,000 nodes",
        scope=(
            "The same simulated nodes and the same `edge-agent-hub run` (SQLite), first without "
            "and then with each node's group health (one group, six measures and the drift "
            "detector, at the telemetry cadence): the bytes the broker took in per node per hour, "
            "the hub's CPU (cores) and RSS, each over the same window, and the ratio with health "
            "to without. And one rollout health verdict (10 % of the nodes against the other 90 "
            "%, 30 windows each, read from the database and tested)."
        ),
        benchmark="bench_hub_health.py",
        where={"nodes": lambda n: n is not None},
        key=("nodes",),
        pivot="bench",
        expect=({"nodes": 1000},),
        command=f"{RECORD} bench_hub_health.py -- --nodes {{nodes}}",
        columns=(
            Column("nodes", "nodes", ",d"),
            Column("telemetry every", "telemetry_s", ".0f", of="health_cost", suffix=" s"),
            Column("broker bytes / node / h, health", "health_bytes_per_node_hour", ",d",
                   of="health_cost"),
            Column("all bytes, with / without", "bytes_ratio", ".2f", of="health_cost",
                   suffix="x"),
            Column("hub CPU, with / without", "hub_cpu_ratio", ".2f", of="health_cost",
                   suffix="x"),
            Column("hub RSS, with / without", "hub_rss_ratio", ".2f", of="health_cost",
                   suffix="x"),
            Column("one verdict", "verdict_ms", ".1f", of="gate", suffix=" ms"),
            Column("its samples", lambda r: (
                f"{r.get('wave_samples', 'gate'):,d} vs {r.get('control_samples', 'gate'):,d}"
                if r.get("wave_samples", "gate") is not None else None
            )),
        ),
    ),
    Table(
        id="learning-merge",
        title="Fleet learning on the hub: deltas ingested, a round's merge",
        scope=(
            "Learning deltas of grid10's transition table B0 (50,000 counts in 500 columns), "
            "each what a node learned in 100 agent-ticks (only the columns visited travel). "
            "Ingested: through the hub's own write path on SQLite (checked against the line's "
            "bundle, stored once), against one telemetry message per node through the same "
            "path. A round: the waiting deltas read as sent (the values not 0 and their places), "
            "then the merge (the cap per column, the leave-one-out score, the sum) over them, "
            "against the dense reference merge of the same deltas in the same process (same "
            "rule, same result: the run checks it), in nodes x counts arrays. Memory: what the "
            "round holds (the deltas as sent, or dense) plus the merge's numpy peak. 100,000 "
            "nodes: the round built in memory from what they sent (not read from the database). "
            "The cells marked (slope) are from the slope between the two largest measured, not "
            "measured."
        ),
        benchmark="bench_learning_merge.py",
        where={
            "nodes": lambda n: n is not None,
            "bench": lambda b: b in ("ingest", "merge", "extrapolated"),
        },
        key=("nodes",),
        pivot="bench",
        expect=({"nodes": 100}, {"nodes": 1000}, {"nodes": 10000}, {"nodes": 100000}),
        command=f"{RECORD} bench_learning_merge.py",
        columns=(
            Column("nodes", "nodes", ",d"),
            Column("bytes / delta", "bytes_per_delta", ",d", of="ingest"),
            Column("deltas / s ingested", "deltas_per_s", ",d", of="ingest"),
            Column("vs telemetry / s", "ratio", ".2f", of="ingest", suffix="x"),
            Column("bytes / round", measured_or_slope("round_bytes", ",.0f", "")),
            Column("round: read", measured_or_slope("read_s", ".2f", " s")),
            Column("merge", measured_or_slope("merge_s", ".2f", " s")),
            Column("held", measured_or_slope("held_mb", ",.0f", " MiB")),
            Column("numpy peak", measured_or_slope("peak_mb", ",.0f", " MiB")),
            Column("dense merge", "dense_merge_s", ".2f", of="merge", suffix=" s"),
            Column("dense held + peak", dense_memory),
            Column("dense / sparse: time", "speedup", ".1f", of="merge", suffix="x"),
            Column("memory", "memory_ratio", ".1f", of="merge", suffix="x"),
            Column("nodes capped", "capped", ",d", of="merge"),
        ),
    ),
    Table(
        id="learning-fleet",
        title="Fleet learning at scale: simulated nodes' deltas through the broker to the hub "
        "on PostgreSQL",
        scope=(
            "Simulated nodes (the fleet simulator: the real link, outbox and protocol, no "
            "agents) each send one report of grid10's B0 (10 agents x 10 ticks of walks on the "
            "true transitions, the daemon's encoder) at the same moment, through mosquitto to "
            "the hub service on PostgreSQL; then the service's policy builds the round (read, "
            "merge, the int8 gate's conversion, signing). Broker bytes: mosquitto's own "
            "counters over the burst (what the nodes sent, MQTT framing and keep-alives "
            "included). Read and merge: of the same deltas, timed by the benchmark while it "
            "holds the line's lease. Round: from the lease's release to the round stored (up "
            "to 0.2 s of the policy's look included). Hub RSS: the service's VmHWM. Each size "
            "three rounds: the least time and byte count, the largest RSS peak. One line, one "
            "replica (replicas shard by model line). The sizes marked (slope) are from the "
            "least-squares line through the sizes measured, not measured."
        ),
        benchmark="bench_learning_fleet.py",
        where={
            "nodes": lambda n: n is not None,
            "bench": lambda b: b in ("round", "extrapolated"),
        },
        key=("nodes",),
        pivot="bench",
        expect=({"nodes": 250}, {"nodes": 500}, {"nodes": 1000}, {"nodes": 10000},
                {"nodes": 100000}),
        command=f"{RECORD} bench_learning_fleet.py",
        columns=(
            Column("nodes", "nodes", ",d"),
            Column("deltas / s ingested", "deltas_per_s", ",d", of="round"),
            Column("ingest", measured_or_slope("ingest_s", ".1f", " s", "round")),
            Column("broker bytes in", measured_or_slope("broker_bytes_received", ",.0f", "",
                                                        "round")),
            Column("bytes / delta", "broker_bytes_received_per_delta", ",d", of="round"),
            Column("read", measured_or_slope("read_s", ".2f", " s", "round")),
            Column("merge", measured_or_slope("merge_s", ".2f", " s", "round")),
            Column("round", measured_or_slope("round_s", ".1f", " s", "round")),
            Column("hub RSS peak", measured_or_slope("hub_rss_peak_mb", ",.0f", " MiB", "round")),
            Column("database added", measured_or_slope("db_bytes_added", ",.0f", " B", "round")),
        ),
    ),
    Table(
        id="coordination-allocation",
        title="Task allocation between real daemons: one agent per task",
        scope=(
            "Five `edge-agentd` of 100 grid10 agents each (20 Hz) on a loopback mosquitto, "
            "`window_s = 0.5`, `state_every_s = 1`; the hub announces 100 tasks at random cells "
            "per round (earlier holders keep theirs). Agreed: the newest `award_changed_at` of "
            "the daemons' status files after the announcement (their wall clocks, one machine), "
            "and after the bidding window (negative: before it closed); messages and bytes on "
            "the `tasks` topics until then, counted by a client subscribed to the fleet."
        ),
        benchmark="bench_coordination_daemons.py",
        where={"bench": "allocation_daemons"},
        key=("daemons", "agents", "round"),
        expect=({"daemons": 5, "agents": 500, "round": 0},),
        command=f"{RECORD} bench_coordination_daemons.py -- --rounds 3",
        columns=(
            Column("daemons", "daemons", "d"),
            Column("agents", "agents", ",d"),
            Column("round", "round", "d"),
            Column("tasks held before", "held_before", ",d"),
            Column("agreed after the announcement", "agreed_after_announce_s", ".2f",
                   suffix=" s"),
            Column("after the window", "agreed_after_window_s", "+.2f", suffix=" s"),
            Column("every award final in its window", "final_before_own_window_closed"),
            Column("messages", "messages_until_agreed", ",d"),
            Column("bytes", "bytes_until_agreed", ",d"),
            Column("re-awards", "reawards", ",d"),
        ),
        notes=f"[{NOTES}/coordination.md]({NOTES}/coordination.md)",
    ),
    Table(
        id="coordination-allocation-protocol",
        title="Task allocation, the protocol alone (one process, simulated clock)",
        scope=(
            "Five nodes of 100 grid10 agents each, every node a real `FleetLink` with its SQLite "
            "outbox on the in-memory broker, ticked on a simulated clock (0.1 s a tick): delivery "
            "is immediate, so the times are protocol round trips, not network latency; CPU is the "
            "process's from the announcement of 100 tasks to agreement (all five nodes)."
        ),
        benchmark="bench_coordination.py",
        where={"bench": "allocation"},
        key=("nodes", "agents", "tasks"),
        expect=({"nodes": 5, "agents": 500, "tasks": 100},),
        command=f"{RECORD} bench_coordination.py",
        columns=(
            Column("nodes", "nodes", "d"),
            Column("agents", "agents", ",d"),
            Column("tasks", "tasks", ",d"),
            Column("agreed after the announcement", "agreed_after_announce_s", ".1f",
                   suffix=" s"),
            Column("after the window", "agreed_after_window_s", "+.1f", suffix=" s"),
            Column("messages / task", "messages_per_task", ".2f"),
            Column("bytes / task", "bytes_per_task", ",.0f"),
            Column("re-awards", "reawards", ",d"),
            Column("fleet CPU until agreed", "cpu_ms_fleet_until_agreed", ",.0f", suffix=" ms"),
        ),
    ),
    Table(
        id="coordination-beliefs",
        title="Belief sharing between real daemons: bytes on the wire",
        scope=(
            "Five `edge-agentd` of 100 agents observe a static 8-state factor per channel "
            "through sensors right 30 % of the time (the benchmark is the sensors, over MQTT) and "
            "share it with the default budget (64 B/agent/s, burst 2 s): the bytes on "
            "`node/+/beliefs` at the broker per agent per second, and the daemons' own figure."
        ),
        benchmark="bench_coordination_daemons.py",
        where={"bench": "belief_bandwidth_daemons"},
        key=("daemons", "tick_hz"),
        expect=({"daemons": 5, "tick_hz": 4.0}, {"daemons": 5, "tick_hz": 10.0}),
        command=f"{RECORD} bench_coordination_daemons.py -- --rounds 3",
        columns=(
            Column("daemons", "daemons", "d"),
            Column("tick rate", "tick_hz", "g", suffix=" Hz"),
            Column("budget", "budget_bytes_per_agent_s", "g", suffix=" B/agent/s"),
            Column("on the wire", "wire_bytes_per_agent_s", ".1f", suffix=" B/agent/s"),
            Column("the daemons' figure", "reported_bytes_per_agent_s_mean", ".1f",
                   suffix=" B/agent/s"),
            Column("messages / daemon / s", "messages_per_daemon_s", ".1f"),
        ),
    ),
    Table(
        id="coordination-efficiency",
        title="Coordination efficiency: a coordinated tick against one agent alone",
        scope=(
            "`efficiency(N) = X(N) / (N x X(1))`, `X` agent-steps per second of CPU, both terms "
            "in one process (grid10, policy length 1, int8, the workloads interleaved): one agent "
            "alone, `N` stepped as one batch without coordination, and a node's whole coordinated "
            "tick (fleet link, engine, step) with 25 tasks held (`steady`) or finished and "
            "replaced every tick (`busy`); a second node runs beside it, its time not counted."
        ),
        benchmark="bench_coordination.py",
        where={"bench": "coordination_efficiency"},
        key=("agents",),
        expect=({"agents": 50}, {"agents": 1000}),
        command=f"{RECORD} bench_coordination.py",
        columns=(
            Column("agents", "agents", ",d"),
            Column("one agent alone", "single_agent_steps_per_s", ",.0f", suffix=" steps/s"),
            Column("batch, no coordination", "efficiency_no_coordination", ".3f"),
            Column("coordinated, steady", "steady_efficiency", ".3f"),
            Column("steady tick", "steady_tick_ms", ".2f", suffix=" ms"),
            Column("of it the engine", "steady_engine_ms", ".2f", suffix=" ms"),
            Column("coordinated, busy", "busy_efficiency", ".3f"),
            Column("busy tick", "busy_tick_ms", ".2f", suffix=" ms"),
            Column("batching gain, steady", "steady_batching_gain", ".1f", suffix="x"),
        ),
    ),
    Table(
        id="team-formation",
        title="Team tasks: formation between real daemons",
        scope=(
            "`D` `edge-agentd` of `A` grid10 agents each (20 Hz, `window_s = 0.5`, "
            "`state_every_s = 1`) on a loopback mosquitto; the hub announces 50 team tasks at "
            "once, teams of 2-5 agents in up to three roles with goals of their own. Agreed: "
            "every daemon holds the same complete award (every team whole, the same members in "
            "the same roles), the newest `award_changed_at` after the announcement; held: every "
            "member took its slot (it waits for its window and every peer's bids). Messages "
            "and bytes on the `tasks` topics until agreed, per agent. Formation CPU: each "
            "daemon's CPU from the announcement until the award was seen agreed, above its idle "
            "rate, the largest of the daemons (measured). With a core per daemon: computed, not "
            "measured, as that CPU plus a 20 Hz tick for each of the three messages of the "
            "critical path (announcement, bids, holds); on this 2-core machine the daemons "
            "share two cores. Rows marked (slope) are from the least-squares lines of the "
            "agreement time and of the CPU over the agents measured, not measured."
        ),
        benchmark="bench_coordination_teams.py",
        where={"bench": lambda b: b in ("team_formation", "team_formation_slope")},
        key=("daemons", "agents"),
        pivot="bench",
        expect=({"daemons": 5, "agents": 500}, {"daemons": 20, "agents": 10000}),
        command=f"{RECORD} bench_coordination_teams.py",
        columns=(
            Column("daemons", "daemons", "d"),
            Column("agents", "agents", ",d"),
            Column("slots", "slots", ",d", of="team_formation"),
            Column("agreed after the announcement", lambda r: (
                cell(r.get("agreed_after_announce_s", "team_formation"), ".2f", " s")
                if r.get("agreed_after_announce_s", "team_formation") is not None
                else cell(r.get("agreed_after_announce_s", "team_formation_slope"), ".2f",
                          " s (slope)")
            )),
            Column("every member held", "held_seen_after_announce_s", ".2f",
                   of="team_formation", suffix=" s"),
            Column("messages / agent", "messages_per_agent", ".3f", of="team_formation"),
            Column("bytes / agent", "bytes_per_agent", ",.0f", of="team_formation"),
            Column("bids / slot", "bids_per_slot", ".1f", of="team_formation"),
            Column("syncs", "syncs_sent", ",d", of="team_formation"),
            Column("teams formed", "teams_formed", ",d", of="team_formation"),
            Column("formation CPU / daemon (max)",
                   lambda r: _measured_or_slope(r, "formation_cpu_s_max", ".2f")),
            Column("with a core per daemon (computed)",
                   lambda r: _measured_or_slope(r, "one_core_estimate_s", ".2f")),
        ),
        headlines=(
            Headline(
                "Team formation, 50 teams of 2-5 on 5 daemons x 100 agents: every daemon agreed",
                lambda r: (
                    None if r.get("agreed_after_announce_s", "team_formation") is None
                    else f"{r.get('agreed_after_announce_s', 'team_formation'):.2f} s "
                    "after the announcement"
                ),
                {"daemons": 5, "agents": 500},
            ),
        ),
        notes=f"[{NOTES}/coordination.md]({NOTES}/coordination.md#team-tasks-issue-55)",
    ),
    Table(
        id="team-formation-cpu",
        title="Team tasks: a formation's CPU per node",
        scope=(
            "The formation above in one process (`N` nodes of `A` grid10 agents on the "
            "in-memory broker, a simulated 10 Hz clock, `window_s = 0.5`, 50 teams of 2-5 in "
            "up to three roles): each node's CPU (`process_time` around its ticks) from the "
            "announcement until every node holds the same award, every team whole and every "
            "member holding its slot, above the CPU of as many idle ticks measured before; "
            "against 100 one-agent tasks on a fleet of the same size. A process's CPU time is "
            "barely moved by the machine's load: these are the per-daemon CPU and its slope "
            "over the fleet's size that the daemons' agreement time with a core each is "
            "computed from."
        ),
        benchmark="bench_coordination_teams.py",
        where={"bench": "team_formation_cpu"},
        key=("nodes", "agents"),
        expect=({"nodes": 5, "agents": 500}, {"nodes": 20, "agents": 10000}),
        command=f"{RECORD} bench_coordination_teams.py",
        columns=(
            Column("nodes", "nodes", "d"),
            Column("agents", "agents", ",d"),
            Column("ticks", "ticks", "d"),
            Column("CPU / node: mean", "cpu_s_per_node_mean", ".3f", suffix=" s"),
            Column("max", "cpu_s_per_node_max", ".3f", suffix=" s"),
            Column("fleet", "cpu_s_fleet", ".2f", suffix=" s"),
            Column("100 one-agent tasks: CPU / node", "single_cpu_s_per_node_mean", ".3f",
                   suffix=" s"),
            Column("teams / one-agent", "teams_over_single", ".2f", suffix="x"),
        ),
        notes=f"[{NOTES}/coordination.md]({NOTES}/coordination.md#team-tasks-issue-55)",
    ),
    Table(
        id="team-repair",
        title="Team tasks: a member's daemon killed",
        scope=(
            "After the formation above, the daemon with the most members is SIGKILLed (the "
            "broker publishes its will): when every other daemon holds the same complete award "
            "again, after the kill, whether the other members kept their slots and round, and "
            "the bound the issue sets (one bidding window plus a `task_state` interval)."
        ),
        benchmark="bench_coordination_teams.py",
        where={"bench": "team_repair", "stalled_s": lambda v: not v},
        key=("daemons", "agents"),
        expect=({"daemons": 5, "agents": 500},),
        command=f"{RECORD} bench_coordination_teams.py",
        columns=(
            Column("daemons", "daemons", "d"),
            Column("agents", "agents", ",d"),
            *REPAIR_COLUMNS,
            Column("repairs", "repairs", ",d"),
            Column("messages", "messages_until_agreed", ",d"),
        ),
        headlines=(
            Headline(
                "Team repair after a member's daemon is killed (5 daemons, 50 teams)",
                lambda r: (
                    f"{r.get('agreed_after_kill_s'):.2f} s, the other members unchanged: "
                    f"{cell(r.get('others_kept_their_slots'))}"
                ),
                {"daemons": 5, "agents": 500},
            ),
        ),
    ),
    Table(
        id="team-repair-stalled",
        title="Team tasks: a member's daemon killed as another resumes from a stall",
        scope=(
            "The repair above, with another daemon stopped (SIGSTOP) for `stalled` seconds "
            "just before the kill and resumed (SIGCONT) as it comes: a daemon starved of CPU "
            "on a loaded machine, made on purpose (`--stall`). Issue 55: before 6fa0ea2 such a "
            "stall set off a sync storm (every stalled node synced to all, and merging a sync "
            "took 0.2 s of CPU) that held repair back 12-35 s."
        ),
        benchmark="bench_coordination_teams.py",
        where={"bench": "team_repair", "stalled_s": bool},
        key=("daemons", "agents", "stalled_s"),
        expect=({"daemons": 5, "agents": 500, "stalled_s": 3.0},),
        command=f"{RECORD} bench_coordination_teams.py -- --scale 5x100 --fit '' "
        "--skip-one-process --stall 3",
        columns=(
            Column("daemons", "daemons", "d"),
            Column("agents", "agents", ",d"),
            Column("stalled", "stalled_s", ".1f", suffix=" s"),
            *REPAIR_COLUMNS,
            Column("messages", "messages_until_agreed", ",d"),
            Column("bytes", "bytes_until_agreed", ",d"),
        ),
        notes=f"[{NOTES}/coordination.md]({NOTES}/coordination.md#team-tasks-issue-55)",
    ),
    Table(
        id="team-quality",
        title="The award against the optimum of the same bids",
        scope=(
            "Random instances in one process, bid as the daemons bid (5 nodes of grid10 agents "
            "at random cells, each its `k = ceil(slots / 5)` cheapest agents per role, or per "
            "task for one-agent tasks): the team award, a greedy that fills slots in increasing "
            "cost (today's one-agent rule applied to slots) and, for one-agent tasks, today's "
            "greedy award, each against scipy's `linear_sum_assignment` over the same bids. "
            "Cost-efficiency is `(optimum - bound) / (award - bound)`, `bound` the sum of each "
            "slot's cheapest bid (costs can be negative). The team award is exact on its "
            "fixed-point costs (1/1024 nat): what is below 1 is that rounding."
        ),
        benchmark="bench_coordination_teams.py",
        where={"bench": lambda b: b in ("team_quality", "single_quality")},
        key=("agents", "nodes"),
        pivot="bench",
        expect=({"agents": 500, "nodes": 5}, {"agents": 100, "nodes": 5}),
        command=f"{RECORD} bench_coordination_teams.py",
        columns=(
            Column("agents", "agents", ",d"),
            Column("team tasks", "tasks", ",d", of="team_quality"),
            Column("slots (mean)", "slots_mean", ".0f", of="team_quality"),
            Column("instances", "instances", "d", of="team_quality"),
            Column("team award: min / median", lambda r: (
                None if r.get("award_efficiency_min", "team_quality") is None else
                f"{r.get('award_efficiency_min', 'team_quality'):.4f} / "
                f"{r.get('award_efficiency_median', 'team_quality'):.4f}"
            )),
            Column("slot greedy: min / median", lambda r: (
                None if r.get("greedy_efficiency_min", "team_quality") is None else
                f"{r.get('greedy_efficiency_min', 'team_quality'):.3f} / "
                f"{r.get('greedy_efficiency_median', 'team_quality'):.3f}"
            )),
            Column("every team formed", "all_teams_formed", of="team_quality"),
            Column("one-agent tasks", "tasks", ",d", of="single_quality"),
            Column("today's greedy: min / median", lambda r: (
                None if r.get("greedy_efficiency_min", "single_quality") is None else
                f"{r.get('greedy_efficiency_min', 'single_quality'):.3f} / "
                f"{r.get('greedy_efficiency_median', 'single_quality'):.3f}"
            )),
        ),
        headlines=(
            Headline(
                "Team award's cost-efficiency against the optimum (500 agents, 50 teams)",
                lambda r: (
                    None if r.get("award_efficiency_min", "team_quality") is None
                    else f"{r.get('award_efficiency_min', 'team_quality'):.4f} at worst; "
                    f"today's greedy on one-agent tasks "
                    f"{r.get('greedy_efficiency_min', 'single_quality'):.3f}"
                ),
                {"agents": 500, "nodes": 5},
            ),
        ),
    ),
    Table(
        id="team-outcome",
        title="Teams in the grid world: the award against the slot greedy",
        scope=(
            "The same agents and bids as above (one agent per cell on average, 20 teams of "
            "2-5), teams awarded by the team award and by the slot greedy; each member pursues "
            "its role's goal with the engine's holder step until it believes it is there "
            "(`done_belief = 0.9`): teams complete within the horizon, mean steps until a "
            "team's last member got there, mean steps of a member."
        ),
        benchmark="bench_coordination_teams.py",
        where={"bench": "team_outcome"},
        key=("agents", "tasks"),
        expect=({"agents": 100, "tasks": 20},),
        command=f"{RECORD} bench_coordination_teams.py",
        columns=(
            Column("agents", "agents", ",d"),
            Column("teams", "teams", ",d"),
            Column("horizon", "horizon_steps", "d", suffix=" steps"),
            Column("complete: award / greedy", lambda r: (
                f"{r.get('award_teams_complete')} / {r.get('greedy_teams_complete')}"
            )),
            Column("team steps: award", "award_team_steps_mean", ".2f"),
            Column("greedy", "greedy_team_steps_mean", ".2f"),
            Column("member steps: award", "award_member_steps_mean", ".2f"),
            Column("greedy", "greedy_member_steps_mean", ".2f"),
        ),
    ),
    Table(
        id="neural-overhead",
        title="A neural group's step against a plain onnxruntime session",
        scope=(
            "In one process, each group as the daemon builds it (`x86-dev`, the signed bundle, "
            "one intra-op thread; its health measures and out-of-range counting on, every 4th "
            "tick as the daemon runs them) against a plain `onnxruntime.InferenceSession` of the "
            "same int8 model file, one thread and onnxruntime's defaults otherwise, on the same "
            "`(N, T, F)` batch: the neural group (the README's `sensor_policy` bundle: window 8 "
            "of 8 features, 32 hidden units) steps (the window's move and write, the ring, one "
            "run, argmax; since `b172c00` the work around the run in the compiled library's "
            "neural pass, and since `75cc63a` the 64-step ring written from the windows every 8 "
            "ticks), the perception group's classifier runs `forward`. The group's "
            "session binds its buffers (onnxruntime's IO binding: the window is the bound input, "
            "written in place; the outputs land in preallocated arrays); the baseline is a plain "
            "`session.run(None, {input: batch})`. Interleaved, rounds of 20 calls each "
            "(`repeats`), the median over rounds of each round's median ratio (its range beside "
            "it); a round's median leaves out what the step does only every few ticks (the "
            "health sample and the range check every 4th, the ring every 8th), the mean of every "
            "call counts it but also every call the shared machine delayed; **every call, by "
            "phase**: the step called 32 x 150 times alternately with the session, its median "
            "at each of the 32 phases of its cadence (the ring's write every 8th tick, the "
            "health measures every 32nd included, each as often as in the daemon) averaged over "
            "the phases, over the session's median: the step's whole cost, robust to a delayed "
            "call (a run before a column was added shows none). Target: 1.2x, measured as the "
            "issue measured it (medians of 300 rounds: the step / session column)."
        ),
        benchmark="bench_neural_daemon.py",
        where={"bench": "overhead", "model": lambda m: m is not None},
        key=("kind", "agents"),
        expect=({"kind": "neural", "agents": 1000}, {"kind": "perception", "agents": 1000}),
        command=f"{RECORD} bench_neural_daemon.py -- --only overhead",
        store=f"{RECORD} bench_neural_daemon.py -- --only overhead",
        columns=(
            Column("group", "kind"),
            Column("model", "model"),
            Column("agents", "agents", ",d"),
            Column("session, 1 thread", "session_run_ms", ".4f", suffix=" ms"),
            Column("group's step", "neural_step_ms", ".4f", suffix=" ms"),
            Column("step / session", "neural_step_ratio", ".2f", suffix="x"),
            Column("range over rounds", lambda r: (
                f"{r.get('neural_step_ratio_range')[0]:.2f}-{r.get('neural_step_ratio_range')[1]:.2f}x"
                if r.get("neural_step_ratio_range") else None
            )),
            Column("mean / session (every call)", "neural_step_mean_ratio", ".2f", suffix="x"),
            Column("every call, by phase", "neural_step_cadence_ratio", ".2f", suffix="x"),
            Column("its own session", "backend_run_ratio", ".2f", suffix="x"),
            Column("session, onnxruntime's threads", "session_run_default_threads_ratio", ".2f",
                   suffix="x"),
            Column("rounds", "repeats", ",d"),
        ),
        headlines=(
            Headline(
                "A neural group's step against a plain onnxruntime session (1 thread), 1,000 "
                "agents, the README's sensor_policy bundle",
                lambda r: f"{r.get('neural_step_ratio'):.2f}x",
                {"kind": "neural", "agents": 1000},
                ends=Ends(lambda r: r.get("neural_step_ratio"), lambda r: str(r.get("kind")),
                          higher_is_better=False),
            ),
        ),
    ),
)


# -- selecting the rows ----------------------------------------------------------------------------


def newest(lines: Iterable[Record], table: Table) -> tuple[dict[tuple[Any, ...], Row], int]:
    """The table's rows by ``(machine, *key)``, each from the newest line per pivot value,
    and how many older lines of the same rows are stored (not shown)."""
    chosen: dict[tuple[Any, ...], Record] = {}
    older = 0
    for line in lines:
        if not table.selects(line):
            continue
        result = line["result"]
        slot = (line["machine"], *(result[k] for k in table.key),
                result.get(table.pivot) if table.pivot else None)
        if slot in chosen:
            older += 1
            if line["date"] < chosen[slot]["date"]:
                continue
        chosen[slot] = line
    rows: dict[tuple[Any, ...], Row] = {}
    grouped: dict[tuple[Any, ...], list[Record]] = {}
    for slot, line in chosen.items():
        grouped.setdefault(slot[:-1], []).append(line)
    for row_key, found in grouped.items():
        rows[row_key] = Row(
            key=dict(zip(table.key, row_key[1:], strict=True)),
            records={
                (line["result"].get(table.pivot) if table.pivot else None): line["result"]
                for line in found
            },
            lines=found,
        )
    return rows, older


def sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def ordered(table: Table, rows: Mapping[tuple[Any, ...], Row]) -> list[tuple[Any, ...]]:
    """Rows in the order of ``expect`` (when given), then by key, then by machine."""
    position = {tuple(e[k] for k in table.key): i for i, e in enumerate(table.expect)}

    def order(row_key: tuple[Any, ...]) -> tuple[Any, ...]:
        key = row_key[1:]
        return (position.get(key, len(position)), *map(sort_key, key), str(row_key[0]))

    return sorted(rows, key=order)


# -- writing the page ------------------------------------------------------------------------------


def provenance(lines: Sequence[Record]) -> list[str]:
    """Machine, CPU, commit, date, load and command of a row's stored lines (joined when a
    row's records come from several runs)."""

    def joined(values: Iterable[str]) -> str:
        return ", ".join(dict.fromkeys(values))

    return [
        joined(cell(line["machine"]) for line in lines),
        joined(cell(f"{line['cpu']} ({line['cores']} cores)") for line in lines),
        joined(
            f"`{line['commit'][:9]}`" + (" (dirty)" if line.get("dirty") else "")
            for line in lines
        ),
        joined(line["date"][:10] for line in lines),
        joined(cell(line.get("load1"), ".1f") for line in lines),
        joined(f"`{cell(line['command'])}`" for line in lines),
    ]


#: The columns every row ends with (:func:`provenance`); the load is the machine's 1-minute load
#: average when the run started: a shared machine's numbers need it.
PROVENANCE = ("machine", "CPU", "commit", "date", "load", "command")


def wrap(text: str) -> list[str]:
    """A paragraph in lines of at most 100 characters, broken at spaces (in a code span, a
    line break reads as a space)."""
    return textwrap.wrap(text, 100, break_long_words=False, break_on_hyphens=False)


def markdown_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in body]
    return out


def not_measured(table: Table, expected: Mapping[str, Any]) -> list[str]:
    """A row that says what is missing: the key's values, "not measured yet" and the command."""
    cells, said = [], False
    for column in table.columns:
        if isinstance(column.get, str) and column.get in table.key:
            cells.append(cell(expected[column.get], column.fmt, column.suffix))
        elif not said:
            cells.append("**not measured yet**")
            said = True
        else:
            cells.append("")
    command = table.command.format(**expected)
    return [*cells, *[""] * (len(PROVENANCE) - 1), f"`{cell(command)}`"]


def render_table(table: Table, lines: Sequence[Record]) -> list[str]:
    rows, older = newest(lines, table)
    body = []
    for row_key in ordered(table, rows):
        row = rows[row_key]
        body.append([c.cell(row) for c in table.columns] + provenance(row.lines))
    measured = {row_key[1:] for row_key in rows}
    for expected in table.expect:
        if tuple(expected[k] for k in table.key) not in measured:
            body.append(not_measured(table, expected))
    out = [f"## {table.title}", "", f'<a id="{table.id}"></a>', "", *wrap(table.scope), ""]
    if body:
        out += markdown_table([c.header for c in table.columns] + list(PROVENANCE), body)
    else:
        out.append(f"**Not measured yet**: `{table.usage()}`.")
    stored = f" ({older} older runs of these rows stored)" if older else ""
    out += ["", *wrap(f"The newest run per machine and row is shown{stored}; "
                      f"`{table.usage()}` stores a run, then `{RENDER}` renders this page.")]
    if table.notes:
        out += ["", *wrap(table.notes)]
    return [*out, ""]


def machines_table(lines: Sequence[Record]) -> list[str]:
    """Each machine that stored runs: its CPU, cores, device, versions, runs and dates."""
    by: dict[str, list[Record]] = {}
    for line in lines:
        by.setdefault(line["machine"], []).append(line)
    body = []
    for name in sorted(by):
        found = by[name]
        last = max(found, key=lambda line: line["date"])
        dates = sorted({line["date"][:10] for line in found})
        runs = len({(line["run"], line["benchmark"]) for line in found})
        loads = [line["load1"] for line in found if isinstance(line.get("load1"), int | float)]
        body.append([
            cell(name), cell(last["cpu"]), cell(last["arch"]), str(last["cores"]),
            cell(last.get("device")), cell(last["python"]), cell(last["numpy"]), str(runs),
            f"{dates[0]} to {dates[-1]}" if len(dates) > 1 else dates[0],
            (f"{min(loads):.1f}" + (f"-{max(loads):.1f}" if max(loads) > min(loads) else ""))
            if loads else "-",
        ])
    header = ["machine", "CPU", "arch", "cores", "device", "Python", "numpy", "runs", "dates",
              "load at start"]
    return markdown_table(header, body)


def headline_table(lines: Sequence[Record]) -> list[str]:
    body = []
    for table in TABLES:
        rows, _ = newest(lines, table)
        for headline in table.headlines:
            found = [
                (row_key, row) for row_key, row in rows.items()
                if all(row.key.get(k) == v for k, v in headline.match.items())
            ]
            link = f"[{table.title}](#{table.id})"
            for row_key, row in sorted(found, key=lambda item: str(item[0][0])):
                try:
                    text = headline.text(row)
                except (TypeError, ValueError):  # a field the run did not print
                    text = None
                ends = None
                if headline.ends is not None:
                    same = (r for k, r in rows.items() if k[0] == row_key[0])
                    ends = headline.ends.text(same)
                body.append(
                    [headline.label, cell(text), cell(ends), link, *provenance(row.lines)[:4]]
                )
            if not found:
                body.append([headline.label, "**not measured yet**", "", link, "", "", "", ""])
    return markdown_table(
        ["question", "result", "both ends over the table", "table", "machine", "CPU", "commit",
         "date"],
        body,
    )


def render(lines: Sequence[Record]) -> str:
    """The whole page, from the stored lines (``result_store.read_all()``)."""
    out = [
        "# Performance",
        "",
        *wrap(
            f"<!-- Rendered by `{RENDER}` from benchmarks/results/*.jsonl: do not edit by hand "
            "(tests/unit/benchmarks/test_render.py checks that this page is what the script "
            "renders). -->"
        ),
        "",
        *wrap(
            "What edge-agent measures, one table per question. Every number comes from a run of "
            "a benchmark in [`benchmarks/`](../benchmarks/) stored in "
            "[`benchmarks/results/`](../benchmarks/results/) (one JSON line per record, a file "
            "per date and machine), and every row names the machine, CPU, commit and date of its "
            "run and the command that reproduces it. A ratio against a peer compares the same "
            "work and says which (scope and cadence) in its column. Where a machine stored "
            "several runs of a row, the newest is shown; a row no run has measured says so, with "
            "its command. A commit "
            "marked (dirty) had uncommitted changes to the code a benchmark runs; `load` is the "
            "machine's 1-minute load average when the run started (on a shared machine, absolute "
            "rates fall as it rises; ratios measured within one run much less)."
        ),
        "",
        *wrap(
            f"To add a run: `{RECORD} [--machine NAME] bench_X.py -- ARGS` (it runs the "
            "benchmark and appends what it printed, with the machine, CPU, commit and date), "
            f"then `{RENDER}`. How the numbers came about, what changed them and why: "
            f"[benchmarks/notes/]({NOTES}/README.md)."
        ),
        "",
        "## Machines",
        "",
        *machines_table(lines),
        "",
        "## Headline",
        "",
        *headline_table(lines),
        "",
    ]
    for table in TABLES:
        out += render_table(table, lines)
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true",
        help="change nothing; exit 1 if docs/performance.md is not what this renders",
    )
    args = parser.parse_args(argv)
    try:
        text = render(read_all())
    except ValueError as err:  # a stored line that is not a JSON object
        print(f"render.py: {err}", file=sys.stderr)
        return 1
    if args.check:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print(
                f"render.py: {PAGE.relative_to(REPO)} is not what the stored results render: "
                f"run `{RENDER}`", file=sys.stderr,
            )
            return 1
        return 0
    PAGE.write_text(text)
    print(f"render.py: wrote {PAGE.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
