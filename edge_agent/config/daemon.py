"""The daemon's TOML config: strict, frozen records and a loader that reports lines.

A config has three tables: ``[daemon]`` (profile, state directory, tick rate, logging, trusted
keys), one ``[[groups]]`` table per agent group (model, count, history, priority, precision, seed,
observation source, action sink, coordination, and the tables of its kind:
:mod:`edge_agent.config.group_tables`) and ``[mqtt]`` (the broker connection), and optionally
``[coordination]`` (the node's coordination engine, see :mod:`edge_agent.coordination.config`).
``docs/configuration.md`` documents every key; :func:`default_config` is the demo.

Every problem in a file, TOML syntax errors included, raises one
:class:`~edge_agent.errors.ConfigError` whose lines read ``path:line: field: problem``, e.g.
``/etc/edge-agent/config.toml:14: groups[1].count: must be >= 1, got 0``.

Paths may use ``~`` and ``${VAR}`` / ``${VAR:-default}`` environment references; relative paths
in a file are resolved against the file's directory.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from edge_agent.config.group_tables import GROUP_TABLES, hook, is_known, kind_tables, table_types
from edge_agent.config.mqtt import NAME_PATTERN, MqttSection
from edge_agent.config.profiles import (
    AUTO,
    DEFAULT_OVERRIDES_DIR,
    PACKAGE_DIR,
    DeviceFacts,
    FirmwareProfile,
    load_profiles,
    read_device_facts,
    select_profile,
)
from edge_agent.config.toml_lines import TomlDocument, validate_toml
from edge_agent.coordination.config import CoordinationConfig, GroupCoordinationConfig
from edge_agent.errors import ConfigError
from edge_agent.records import (
    OPTIONAL_PATH,
    PATH,
    Check,
    Problem,
    Record,
    RecordError,
    Rule,
    expand_path,
    mark_given,
    path_from_document,
    raise_problems,
)
from edge_agent.sim.registry import BUILTIN_WORKLOADS

__all__ = [
    "BuiltinModel",
    "BundleModel",
    "ConfigFile",
    "DaemonConfig",
    "DaemonSection",
    "GroupConfig",
    "KindModel",
    "LogSink",
    "MqttSink",
    "MqttSource",
    "SimSink",
    "SimSource",
    "check_config",
    "default_config",
    "default_config_text",
    "describe_config",
    "describe_endpoint",
    "expand_path",
    "load_config",
    "parse_config",
    "path_from_document",
    "profile_problems",
    "read_config",
    "resolve_profile",
]

_MODULE = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$"
_PROFILE_NAME = r"^[a-z0-9][a-z0-9-]{0,31}$"
_DEFAULT_CONFIG = "default_config.toml"


def _prom_suffix(path: Path | None, _context: Mapping[str, Any]) -> Path | None:
    if path is not None and path.suffix != ".prom":
        raise ValueError(
            f"{path}: node_exporter's textfile collector reads only files ending in .prom"
        )
    return path


def _known_profile(name: str, context: Mapping[str, Any]) -> str:
    known: Collection[str] | None = context.get("profile_names")
    if known is not None and name != AUTO and name not in known:
        raise ValueError(
            f"unknown firmware profile {name!r}; known: auto, {', '.join(sorted(known))}"
        )
    return name


# ----------------------------------------------------------------------------------- [daemon]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class DaemonSection(Record):
    """``[daemon]``: what the daemon runs as, where it keeps state, how fast it ticks."""

    profile: Annotated[
        str,
        Rule(
            pattern=rf"^auto$|{_PROFILE_NAME}",
            description="Firmware profile name, or 'auto' to detect it from the device.",
        ),
        Check(_known_profile),
    ] = AUTO
    state_dir: Annotated[
        Path, Rule(description="Directory for snapshots, the outbox and sequence numbers."), PATH
    ] = Path("/var/lib/edge-agent")
    tick_hz: Annotated[
        float | None,
        Rule(gt=0, le=1000, description="Tick rate (Hz); default: the profile's tick_hz."),
    ] = None
    status_file: Annotated[
        Path | None,
        Rule(description="Status JSON for 'edge-agent status'; default {state_dir}/status.json."),
        OPTIONAL_PATH,
    ] = None
    log_level: Annotated[
        LogLevel, Rule(description="Log level of the daemon (stderr/journald).")
    ] = "info"
    trusted_keys_dir: Annotated[
        Path | None,
        Rule(
            description="Directory of *.pub ed25519 keys trusted for bundles and hub commands; "
            "empty: no signed content is accepted."
        ),
        OPTIONAL_PATH,
    ] = None
    prometheus_textfile: Annotated[
        Path | None,
        Rule(
            description="Write the daemon's metrics to this *.prom file for "
            "node_exporter's textfile "
            "collector (e.g. /var/lib/prometheus/node-exporter/edge_agent.prom); default: off."
        ),
        OPTIONAL_PATH,
        Check(_prom_suffix),
    ] = None
    prometheus_interval_s: Annotated[
        float,
        Rule(ge=1.0, le=3600.0, description="How often the Prometheus text file is rewritten (s)."),
    ] = 15.0

    @property
    def status_path(self) -> Path:
        """Where the status file goes: ``status_file`` or ``{state_dir}/status.json``."""
        return self.status_file if self.status_file is not None else self.state_dir / "status.json"

    def tick_hz_for(self, profile: FirmwareProfile) -> float:
        """The tick rate in force: ``tick_hz`` if set, else the profile's."""
        return self.tick_hz if self.tick_hz is not None else profile.tick_hz


# ------------------------------------------------------------------------------------ [[groups]]
def _known_model(name: str, _context: Mapping[str, Any]) -> str:
    return _known_workload(name, "built-in model")


def _known_world(name: str | None, _context: Mapping[str, Any]) -> str | None:
    return None if name is None else _known_workload(name, "built-in world")


def _subscribe_topic(topic: str, _context: Mapping[str, Any]) -> str:
    return _check_topic(topic, wildcards=True)


def _publish_topic(topic: str, _context: Mapping[str, Any]) -> str:
    return _check_topic(topic, wildcards=False)


class BuiltinModel(Record):
    """A generative model that ships with edge-agent (``grid10``, ``tmaze``)."""

    type: Annotated[Literal["builtin"], Rule(description="Selects this kind of model.")]
    name: Annotated[
        str,
        Rule(pattern=NAME_PATTERN, description="Name of the built-in model."),
        Check(_known_model),
    ]


class BundleModel(Record):
    """A signed model bundle (directory or .tar) made by ``edge-agent-host``."""

    type: Annotated[Literal["bundle"], Rule(description="Selects this kind of model.")]
    path: Annotated[
        Path, Rule(description="Bundle directory or .tar; relative to the config file."), PATH
    ]


class KindModel(Record):
    """A kind of agent group of one's own: a module that defines ``KIND`` (a
    :class:`~edge_agent.kinds.base.GroupKind`), which loads or builds its model itself."""

    type: Annotated[Literal["kind"], Rule(description="Selects this kind of model.")]
    module: Annotated[
        str,
        Rule(
            pattern=_MODULE,
            description="Dotted path of the kind's module, importable by the daemon.",
        ),
    ]


ModelSpec = BuiltinModel | BundleModel | KindModel


def _known_workload(name: str, what: str) -> str:
    if name not in BUILTIN_WORKLOADS:
        raise ValueError(f"unknown {what} {name!r}; known: {', '.join(sorted(BUILTIN_WORKLOADS))}")
    return name


def _check_topic(topic: str, *, wildcards: bool) -> str:
    if "\0" in topic:
        raise ValueError("must not contain NUL")
    levels = topic.split("/")
    for index, level in enumerate(levels):
        if not wildcards and ("+" in level or "#" in level):
            raise ValueError(f"a publish topic cannot contain wildcards, got {topic!r}")
        if "+" in level and level != "+":
            raise ValueError(f"'+' must be a whole topic level, got {topic!r}")
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise ValueError(f"'#' must be the whole last topic level, got {topic!r}")
    return topic


class SimSource(Record):
    """Observations from a built-in simulated world, stepped with the agents."""

    type: Annotated[Literal["sim"], Rule(description="Selects this kind of source.")]
    world: Annotated[
        str | None,
        Rule(
            pattern=NAME_PATTERN,
            description="Built-in world that produces the observations (grid10, tmaze, explorer). "
            "Default: the group's built-in model. Required with a bundle model, whose dimensions "
            "must match the world's.",
        ),
        Check(_known_world),
    ] = None


class MqttSource(Record):
    """Observations from MQTT messages on a topic filter (wildcards allowed)."""

    type: Annotated[Literal["mqtt"], Rule(description="Selects this kind of source.")]
    topic: Annotated[
        str,
        Rule(min_length=1, max_length=256, description="MQTT topic filter, e.g. 'sensors/grid/+'."),
        Check(_subscribe_topic),
    ]


SourceSpec = SimSource | MqttSource


class SimSink(Record):
    """Actions go back to the simulated environment."""

    type: Annotated[Literal["sim"], Rule(description="Selects this kind of sink.")]


class MqttSink(Record):
    """Actions are published on an MQTT topic (through the durable outbox)."""

    type: Annotated[Literal["mqtt"], Rule(description="Selects this kind of sink.")]
    topic: Annotated[
        str,
        Rule(
            min_length=1, max_length=256, description="MQTT topic, no wildcards: 'actuators/grid'."
        ),
        Check(_publish_topic),
    ]


class LogSink(Record):
    """Actions are written to the daemon's log and go nowhere else."""

    type: Annotated[Literal["log"], Rule(description="Selects this kind of sink.")]


SinkSpec = SimSink | MqttSink | LogSink


#: A group gets the profile's workers only with at least this many agents per process: below,
#: a tick is short enough that a worker's memory (~12 MB) buys little (benchmarks/notes/workers.md).
AGENTS_PER_WORKER = 2048


class GroupConfig(Record):
    """``[[groups]]``: agents that share one model and are stepped as one batch."""

    name: Annotated[
        str, Rule(pattern=NAME_PATTERN, description="Unique group name, [a-z0-9_-]{1,32}.")
    ]
    model: Annotated[
        ModelSpec,
        Rule(discriminator="type", description="The model every agent of the group runs."),
    ]
    count: Annotated[int, Rule(ge=1, le=1_000_000, description="Number of agents in the group.")]
    history_capacity: Annotated[
        int | None,
        Rule(ge=1, le=65536, description="Steps kept per agent; default: the profile's."),
    ] = None
    workers: Annotated[
        int | None,
        Rule(
            ge=1,
            le=64,
            description="Processes that step the group's blocks of agents (an Active Inference "
            "group of more than one block); default: the profile's.",
        ),
    ] = None
    priority: Annotated[
        int, Rule(ge=0, le=9, description="0-9, higher is more important; low ones pause first.")
    ] = 5
    precision: Annotated[
        Literal["int8", "float64"],
        Rule(description="int8 tables and beliefs, or the float64 reference path."),
    ] = "int8"
    seed: Annotated[
        int,
        Rule(
            ge=0, le=2**63 - 1, description="Seed of the group's random generator (sim, sampling)."
        ),
    ] = 0
    source: Annotated[
        SourceSpec, Rule(discriminator="type", description="Where observations come from.")
    ]
    sink: Annotated[SinkSpec, Rule(discriminator="type", description="Where actions go.")]
    tables: Annotated[
        tuple[tuple[str, Record], ...],
        Rule(
            description="The group's tables that belong to its kind (group_tables.GROUP_TABLES: "
            "history_beliefs, [groups.settings], [groups.planning], [groups.learning], "
            "perception, [groups.policy]), by key; in a file, each under its own key."
        ),
    ] = ()
    coordination: Annotated[
        GroupCoordinationConfig | None,
        Rule(
            description="[groups.coordination]: the task capabilities the group bids for and the "
            "factors it shares with its peers (needs [mqtt] enabled)."
        ),
    ] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        problems: list[Problem] = []
        if isinstance(self.source, MqttSource) and isinstance(self.sink, SimSink):
            problems.append(
                (
                    ("sink", "type"),
                    "a 'sim' sink acts on a simulated world and needs "
                    "a 'sim' source; with an mqtt source use sink type 'mqtt' or 'log'",
                )
            )
        if (
            isinstance(self.source, SimSource)
            and self.source.world is None
            and not isinstance(self.model, BuiltinModel)
        ):
            problems.append(
                (
                    ("source", "world"),
                    f"a 'sim' source with a {self.model.type} model needs the "
                    "built-in world that produces its observations",
                )
            )
        for key, table in self.tables:
            if not is_known(key, table):
                problems.append(((key,), "unknown key"))
            elif (check := hook(table, "group_problems")) is not None:
                problems.extend(check(self))
        raise_problems("GroupConfig", problems)

    # -- the tables of the group's kind (edge_agent.config.group_tables) --------------------------
    def table(self, key: str) -> Record | None:
        """The group's table ``key`` (of ``GROUP_TABLES``), None when it has none."""
        return next((table for k, table in self.tables if k == key), None)

    def table_of(self, record: type[R]) -> R | None:
        """The group's table that is a ``record``, None when it has none."""
        return next((t for _, t in self.tables if isinstance(t, record)), None)

    def table_or_default(self, record: type[R]) -> R:
        """The group's table that is a ``record``, else ``record()``: for a table whose
        absence means its defaults (``[groups.settings]``: pymdp's; ``[groups.planning]``: every
        agent every tick)."""
        found = self.table_of(record)
        return found if found is not None else record()

    def document_part(self, key: str) -> object:
        table = self.table(key)
        return table if table is not None else super().document_part(key)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """A group in a document: its keys and, each under its own key, the tables of
        ``GROUP_TABLES`` (validated by their records), made into a :class:`GroupConfig` whose
        own checks run then (only where documents are validated: pydantic's hook)."""
        from pydantic_core import core_schema  # noqa: PLC0415 - only where documents are validated

        return core_schema.no_info_after_validator_function(
            _group_from_document, handler.generate_schema(cls.__document__())
        )

    @classmethod
    def __document__(cls) -> type[Record]:
        """The record a group is read as from a document: the group's fields, ``tables`` spread
        out into one optional field per table (the reader's errors and suggestions name them)."""
        return _group_document()

    def workers_for(self, profile: FirmwareProfile) -> int:
        """The processes in force: a table's that sets them (a learning group's), else the
        group's, else the profile's (0: the CPUs this process may run on) for groups of at least
        :data:`AGENTS_PER_WORKER` agents per process."""
        for _key, table in self.tables:
            if (processes := hook(table, "processes")) is not None:
                return int(processes(self))
        if self.workers is not None:
            return self.workers
        cores = profile.workers if profile.workers > 0 else len(os.sched_getaffinity(0))
        return max(1, min(cores, self.count // AGENTS_PER_WORKER))

    def history_capacity_for(self, profile: FirmwareProfile) -> int:
        """The history capacity in force: a table's that sets it (none for a group with
        per-agent counts), else the group's, else the profile's."""
        for _key, table in self.tables:
            history = hook(table, "history")
            if history is not None and (capacity := history(self)) is not None:
                return int(capacity)
        if self.history_capacity is not None:
            return self.history_capacity
        return profile.history_capacity


R = TypeVar("R", bound=Record)


@functools.cache
def _group_document() -> type[Record]:
    """:meth:`GroupConfig.__document__`: built once, when the first document is validated (it
    imports every table's record)."""
    hints = typing.get_type_hints(GroupConfig, include_extras=True)
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {"__module__": __name__, "__qualname__": "GroupDocument"}
    for f in dataclasses.fields(GroupConfig):
        if f.name == "tables":  # each table under its own key, where the field is
            for key, record in table_types().items():
                doc = (record.__doc__ or "").strip().splitlines()[0]
                annotations[key] = Annotated[record | None, Rule(description=doc)]
                namespace[key] = None
            continue
        annotations[f.name] = hints[f.name]
        if f.default is not dataclasses.MISSING:
            namespace[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f.name] = field(default_factory=f.default_factory)
    namespace["__annotations__"] = annotations
    return type("GroupDocument", (Record,), namespace)


def _group_from_document(document: Record) -> GroupConfig:
    values = {f.name: getattr(document, f.name) for f in dataclasses.fields(document)}  # type: ignore[arg-type]
    tables = tuple((key, values.pop(key)) for key in GROUP_TABLES)
    return GroupConfig(**values, tables=tuple((k, t) for k, t in tables if t is not None))


# ---------------------------------------------------------------------------------- the config
class DaemonConfig(Record):
    """A whole daemon config file."""

    daemon: Annotated[DaemonSection, Rule(description="[daemon]")] = field(
        default_factory=DaemonSection
    )
    groups: Annotated[
        tuple[GroupConfig, ...],
        Rule(min_length=1, max_length=64, description="[[groups]], one table per agent group."),
    ]
    mqtt: Annotated[MqttSection, Rule(description="[mqtt]")] = field(default_factory=MqttSection)
    coordination: Annotated[
        CoordinationConfig | None,
        Rule(
            description="[coordination]: the node's task auction and coordination engine "
            "(used when a group has [groups.coordination])."
        ),
    ] = None

    @classmethod
    def __elsewhere__(cls) -> tuple[tuple[type[Record], str], ...]:
        """Documents whose keys a config is given by mistake, and where they belong (what the
        reader says of such an unknown key, :mod:`edge_agent.config.toml_lines`)."""
        return (
            (
                FirmwareProfile,
                "the firmware profile ('edge-agent profile show NAME' shows it; yours go in "
                f"{DEFAULT_OVERRIDES_DIR}/NAME.toml, "
                "docs/configuration.md#where-profiles-are-found)",
            ),
        )

    def __post_init__(self) -> None:
        super().__post_init__()
        problems: list[Problem] = []
        first: dict[str, int] = {}
        for index, group in enumerate(self.groups):
            if group.name in first:
                problems.append(
                    (
                        ("groups", index, "name"),
                        f"duplicate group name {group.name!r} "
                        f"(first used in groups[{first[group.name]}])",
                    )
                )
            else:
                first[group.name] = index
            if not self.mqtt.enabled:
                for part in ("source", "sink"):
                    if getattr(group, part).type == "mqtt":
                        problems.append(
                            (("groups", index, part), f"an mqtt {part} needs [mqtt] enabled = true")
                        )
                if group.coordination is not None:
                    problems.append(
                        (("groups", index, "coordination"), "needs [mqtt] enabled = true")
                    )
                for key, table in group.tables:
                    fleet_keys = hook(table, "fleet_keys")
                    problems.extend(
                        (("groups", index, key, name), "needs [mqtt] enabled = true")
                        for name in (fleet_keys() if fleet_keys is not None else ())
                    )
        if self.coordination is not None and not self.mqtt.enabled:
            problems.append((("coordination",), "needs [mqtt] enabled = true"))
        raise_problems("DaemonConfig", problems)

    @property
    def total_agents(self) -> int:
        return sum(g.count for g in self.groups)

    def group(self, name: str) -> GroupConfig:
        """The group called ``name`` (KeyError if there is none)."""
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)


def profile_problems(config: DaemonConfig, profile: FirmwareProfile) -> list[Problem]:
    """What in ``config`` does not suit ``profile`` (memory is checked by the budget, not here)."""
    problems: list[Problem] = []
    running = 0
    for index, group in enumerate(config.groups):
        running += group.count
        if running > profile.max_agents:
            problems.append(
                (
                    ("groups", index, "count"),
                    f"brings the total to {running} agents, over max_agents {profile.max_agents} "
                    f"of profile {profile.name!r}",
                )
            )
            break
    tick_hz = config.daemon.tick_hz_for(profile)
    slowest = 1 / (tick_hz * profile.thermal.throttled_tick_factor)
    if slowest * 2 > profile.watchdog_interval_s:
        problems.append(
            (
                ("daemon", "tick_hz"),
                f"{tick_hz:g} Hz is too slow for the {profile.watchdog_interval_s:g} s watchdog of "
                f"profile {profile.name!r} (a throttled tick takes {slowest:g} s)",
            )
        )
    for index, group in enumerate(config.groups):
        for _key, table in group.tables:  # a table's own limits at the tick (planning's deadline)
            if (check := hook(table, "tick_problems")) is not None:
                problems.extend((("groups", index, *loc), text) for loc, text in check(tick_hz))
    return problems


# -------------------------------------------------------------------------------------- loading
def parse_config(
    text: str,
    path: str = "<string>",
    *,
    base_dir: str | Path | None = None,
    profiles: Mapping[str, FirmwareProfile] | None = None,
) -> DaemonConfig:
    """Validate config ``text``; ``path`` names it in errors.

    Relative paths in the text are resolved against ``base_dir`` (left relative when None). With
    ``profiles``, ``[daemon] profile`` must be ``"auto"`` or one of their names. Raises
    ConfigError with one ``path:line: field: problem`` line per problem.
    """
    document = TomlDocument.parse(text, path)
    return _validate(document, base_dir, profiles)


def load_config(
    path: str | Path, *, profiles: Mapping[str, FirmwareProfile] | None = None
) -> DaemonConfig:
    """Read and validate a config file; relative paths in it are relative to its directory."""
    document = TomlDocument.read(path)
    return _validate(document, Path(path).absolute().parent, profiles)


def _validate(
    document: TomlDocument,
    base_dir: str | Path | None,
    profiles: Mapping[str, FirmwareProfile] | None,
) -> DaemonConfig:
    context: dict[str, Any] = {"base_dir": base_dir}
    if profiles is not None:
        context["profile_names"] = frozenset(profiles)
    shared, own = _kind_tables(document)
    config = validate_toml(DaemonConfig, shared, context=context)
    return _with_kind_tables(config, document, own, context) if own else config


#: Of each group whose kind is named by its module: its tables, by key, as that module lists them.
_KindTables = dict[int, dict[str, type[Record]]]


def _kind_tables(document: TomlDocument) -> tuple[TomlDocument, _KindTables]:
    """The document without the tables of kinds outside the package (``model = { type = "kind",
    module = ... }``), and those tables' records by group: a group with keys beyond every group's
    gets the keys its kind's module lists (:func:`~edge_agent.config.group_tables.kind_tables`).
    A module that cannot be imported then is a problem at ``model.module``."""
    groups = document.data.get("groups")
    if not isinstance(groups, list):
        return document, {}
    every = {f.name for f in dataclasses.fields(_group_document())}  # type: ignore[arg-type]
    own: _KindTables = {}
    for index, group in enumerate(groups):
        extra = [key for key in group if key not in every] if isinstance(group, dict) else []
        module = _kind_module(group) if extra else None
        if module is None:
            continue
        try:
            tables = kind_tables(module)
        except (ImportError, ValueError) as err:
            why = "cannot be imported" if isinstance(err, ImportError) else "lists its tables wrong"
            problem = f"kind {module!r}: module {module!r} {why}: {err}"
            raise document.error([(("groups", index, "model", "module"), problem)]) from err
        if found := {key: tables[key] for key in extra if key in tables}:
            own[index] = found
    if not own:
        return document, own
    shared = [
        {k: v for k, v in group.items() if k not in own.get(index, {})}
        for index, group in enumerate(groups)
    ]
    return dataclasses.replace(document, data={**document.data, "groups": shared}), own


def _kind_module(group: dict[str, Any]) -> str | None:
    """The module a group's ``model = { type = "kind", module = ... }`` names (None: another
    model, or a module its rule refuses: the document's reader reports it)."""
    model = group.get("model")
    if not isinstance(model, dict) or model.get("type") != "kind":
        return None
    module = model.get("module")
    return module if isinstance(module, str) and re.match(_MODULE, module) else None


def _with_kind_tables(
    config: DaemonConfig, document: TomlDocument, own: _KindTables, context: dict[str, Any]
) -> DaemonConfig:
    """``config`` with the tables of kinds outside the package, each read at its lines."""
    groups = list(config.groups)
    problems: list[Problem] = []
    for index, records in own.items():
        tables = tuple(
            (key, validate_toml(record, document, context=context, at=("groups", index, key)))
            for key, record in records.items()
        )
        try:
            groups[index] = dataclasses.replace(groups[index], tables=groups[index].tables + tables)
        except RecordError as err:  # a table's checks of its group (group_problems)
            problems.extend((("groups", index, *loc), text) for loc, text in err.problems)
    if problems:
        raise document.error(problems)
    config = dataclasses.replace(config, groups=tuple(groups))
    mark_given(config, document.data)
    return config


@dataclass(frozen=True)
class ConfigFile:
    """A validated config and the document it came from, so that problems found later (the
    profile, the models, the memory budget) are reported at the line of the key they are about.
    """

    config: DaemonConfig
    document: TomlDocument
    #: The firmware profiles the config was checked against (None: load them when needed).
    profiles: Mapping[str, FirmwareProfile] | None = None

    @property
    def path(self) -> str:
        return self.document.path

    def error(self, problems: list[Problem]) -> ConfigError:
        """``path:line: field: problem`` for each problem, sorted by line."""
        return self.document.error(problems)

    def group_loc(self, name: str, *keys: str) -> tuple[str | int, ...]:
        """The location of group ``name`` (and a key inside it)."""
        for index, group in enumerate(self.config.groups):
            if group.name == name:
                return ("groups", index, *keys)
        return ("groups",)


def read_config(
    path: str | Path | None, *, profiles: Mapping[str, FirmwareProfile] | None = None
) -> ConfigFile:
    """Read and validate a config file (``None``: the embedded demo config) against the schema
    and the known profile names. Raises ConfigError, one ``path:line: field: problem`` each."""
    known = profiles if profiles is not None else load_profiles()
    if path is None:
        document = TomlDocument.parse(default_config_text(), f"<embedded {_DEFAULT_CONFIG}>")
        base_dir = None
    else:
        document = TomlDocument.read(path)
        base_dir = Path(path).absolute().parent
    return ConfigFile(_validate(document, base_dir, known), document, known)


def resolve_profile(
    source: ConfigFile,
    *,
    profiles: Mapping[str, FirmwareProfile] | None = None,
    facts: DeviceFacts | None = None,
) -> FirmwareProfile:
    """The firmware profile ``source`` runs on, checked against what the profile allows
    (:func:`profile_problems`). ``"auto"`` is detected from ``facts`` (default: this machine).
    The profiles are ``profiles``, else those ``source`` was read with, else the installed ones."""
    known = profiles if profiles is not None else source.profiles
    if known is None:
        known = load_profiles()
    config = source.config
    device = facts
    if config.daemon.profile == AUTO and device is None:
        device = read_device_facts()
    try:
        profile = select_profile(config.daemon.profile, known, device)
    except ConfigError as err:
        raise source.error([(("daemon", "profile"), str(err))]) from err
    problems = profile_problems(config, profile)
    if problems:
        raise source.error(problems)
    return profile


def default_config_text() -> str:
    """The embedded demo config (``edge_agent/data/default_config.toml``) as text."""
    return (PACKAGE_DIR / "data" / _DEFAULT_CONFIG).read_text("utf-8")


def default_config() -> DaemonConfig:
    """The demo config: profile x86-dev, 1,000 grid10 and 1,000 tmaze int8 agents, simulated.

    Its state directory is ``${XDG_STATE_HOME:-~/.local/state}/edge-agent``.
    """
    return parse_config(default_config_text(), f"<embedded {_DEFAULT_CONFIG}>")


def check_config(
    path: str | Path,
    *,
    profiles: Mapping[str, FirmwareProfile] | None = None,
    facts: DeviceFacts | None = None,
) -> tuple[bool, str]:
    """Validate a config file and its profile: ``(ok, report)``.

    The same steps as the daemon (:func:`read_config`, :func:`resolve_profile`; ``"auto"`` is
    detected with ``facts``, default: this machine). On failure the report is one
    ``path:line: field: problem`` line per problem; on success it summarises the config. The
    models and the memory budget are checked by ``edge-agent check-config``
    (``edge_agent.daemon.admission.admit``), which needs the models themselves.
    """
    try:
        source = read_config(path, profiles=profiles)
        profile = resolve_profile(source, profiles=profiles, facts=facts)
    except ConfigError as err:
        return False, str(err)
    return True, describe_config(source, profile, facts)


def describe_config(
    source: ConfigFile, profile: FirmwareProfile, facts: DeviceFacts | None = None
) -> str:
    """The summary ``check-config`` prints for a config that passed: profile, tick, groups."""
    device = facts
    if source.config.daemon.profile == AUTO and device is None:
        device = read_device_facts()
    return _summary(source.path, source.config, profile, device)


def _summary(
    path: str, config: DaemonConfig, profile: FirmwareProfile, facts: DeviceFacts | None
) -> str:
    daemon = config.daemon
    detected = (
        f", auto-detected from {facts.describe()}" if daemon.profile == AUTO and facts else ""
    )
    tick = daemon.tick_hz_for(profile)
    tick_note = "" if daemon.tick_hz is not None else " (profile default)"
    lines = [
        f"{path}: OK",
        f"  profile: {profile.name}{detected}",
        f"  memory: budget {profile.memory_budget_mb} MiB + base {profile.base_mb} MiB, "
        f"soft limit {profile.soft_limit_mb} MiB",
        f"  tick: {tick:g} Hz{tick_note}",
        f"  state_dir: {daemon.state_dir}",
        f"  status_file: {daemon.status_path}",
        f"  groups: {len(config.groups)}, {config.total_agents} agents "
        f"(profile allows {profile.max_agents})",
    ]
    width = max(len(g.name) for g in config.groups)
    for group in config.groups:
        model = group.model
        if isinstance(model, BuiltinModel):
            what = f"builtin {model.name}"
        elif isinstance(model, BundleModel):
            what = f"bundle {model.path}"
        else:
            what = f"kind {model.module}"
        added = [h() for _, t in group.tables if (h := hook(t, "summary_model")) is not None]
        if added:
            what += "".join(f" + {text}" for text in added)
        elif (processes := group.workers_for(profile)) > 1:
            what += f" on up to {processes} processes"
        tails = [h() for _, t in group.tables if (h := hook(t, "summary_tail")) is not None]
        lines.append(
            f"    {group.name:<{width}}  {group.count} x {what}, {group.precision}, history "
            f"{group.history_capacity_for(profile)}, priority {group.priority}, "
            f"source {describe_endpoint(group.source)}, sink {describe_endpoint(group.sink)}"
            + "".join(f", {text}" for text in tails if text is not None)
        )
    mqtt = config.mqtt
    if mqtt.enabled:
        tls = " (TLS)" if mqtt.tls.enabled else ""
        lines.append(
            f"  mqtt: {mqtt.host}:{mqtt.port}{tls}, fleet {mqtt.fleet!r}, "
            f"node {mqtt.effective_node_id()!r}"
        )
    else:
        lines.append("  mqtt: disabled")
    lines.extend(_coordination_summary(config))
    return "\n".join(lines)


def _coordination_summary(config: DaemonConfig) -> list[str]:
    """What the node coordinates (``check-config``): groups, tasks, shared factors, window."""
    node = config.coordination or CoordinationConfig()
    parts = []
    for group in config.groups:
        c = group.coordination
        if c is None or not c.active:
            continue
        what = [f"tasks {', '.join(c.capabilities)}"] if c.capabilities else []
        if c.sharing is not None:
            what.append(f"shares factor(s) {list(c.sharing.factors)}, trust {c.sharing.trust:g}")
        parts.append(f"{group.name} ({'; '.join(what)})")
    if not parts or not node.enabled:
        return ["  coordination: off"] if parts else []
    return [f"  coordination: {', '.join(parts)}; bidding window {node.auction.window_s:g} s"]


def describe_endpoint(spec: SimSource | MqttSource | SimSink | MqttSink | LogSink) -> str:
    """A source or sink in one phrase: ``sim``, ``log`` or ``mqtt 'topic'`` (check-config)."""
    if isinstance(spec, MqttSource | MqttSink):
        return f"mqtt {spec.topic!r}"
    return spec.type
