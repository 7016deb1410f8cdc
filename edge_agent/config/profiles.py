"""Firmware profiles: how much of a device the daemon may use, and which profile a device gets.

A profile is one TOML file in ``firmware_profiles/`` (see ``docs/configuration.md``). It fixes the
memory budget, the systemd memory limits, thread count, tick rate, history length, snapshot rate
(SD-card wear), thermal throttling and supervision intervals for one class of device. The daemon
picks one by name (``[daemon] profile = "pi4-4gb"``) or detects it (``"auto"``) from the
device-tree model, the total memory and the CPU architecture; the most specific match wins.

Where profiles are found: the ``directory`` argument of :func:`load_profiles`, else
``$EDGE_AGENT_PROFILES_DIR``, else the profiles shipped as package data
(``edge_agent/firmware_profiles/``, read from the installed package's directory: the package is
always installed as files; the repository's top-level ``firmware_profiles`` points there).
Then ``/etc/edge-agent/profiles.d/*.toml`` (``$EDGE_AGENT_PROFILES_OVERRIDES``) adds profiles
and replaces shipped ones of the same name: the place for an operator's own boards, kept across
package upgrades.

Memory accounting, in MiB: the daemon's own overhead ``base_mb`` plus what models and agents may
reserve, ``memory_budget_mb``, make the :class:`~edge_agent.core.budget.MemoryBudget` total
(:attr:`FirmwareProfile.total_budget_bytes`), in which the base is counted as used from the start.
RSS above ``soft_limit_mb`` triggers degradation; ``memory_high_mb`` and ``memory_max_mb`` are the
unit's systemd ``MemoryHigh`` and ``MemoryMax``.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from edge_agent.config.toml_lines import TomlDocument, validate_toml
from edge_agent.errors import ConfigError
from edge_agent.records import Check, Loc, Problem, Record, Rule, raise_problems

__all__ = [
    "AUTO",
    "DEVICE_TREE_MODEL_PATHS",
    "PROFILES_DIR_ENV",
    "DeviceFacts",
    "FirmwareProfile",
    "MemoryTier",
    "ProfileMatch",
    "ThermalSettings",
    "default_profiles_dir",
    "detect_profile",
    "explain_profile",
    "format_profiles_table",
    "get_profile",
    "load_profile_file",
    "load_profiles",
    "overrides_dir",
    "read_device_facts",
    "select_profile",
    "shipped_profiles_dir",
]

MiB = 1024 * 1024

#: The profile name that asks for auto-detection.
AUTO = "auto"
#: Environment variable naming a profiles directory used instead of the shipped profiles.
PROFILES_DIR_ENV = "EDGE_AGENT_PROFILES_DIR"
#: The operator's profiles, added to (and replacing by name) whichever set is loaded.
#: The installed ``edge_agent`` package: profiles and the demo config are read from its files.
PACKAGE_DIR = Path(__file__).resolve().parent.parent
OVERRIDES_DIR_ENV = "EDGE_AGENT_PROFILES_OVERRIDES"
DEFAULT_OVERRIDES_DIR = "/etc/edge-agent/profiles.d"
#: Where the kernel exposes the device-tree model string, first readable wins.
DEVICE_TREE_MODEL_PATHS = (
    Path("/proc/device-tree/model"),
    Path("/sys/firmware/devicetree/base/model"),
)

_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"
_MAX_MEM_MIB = 1 << 22  # 4 TiB: an upper bound for every memory size below
_MAX_MB = 1 << 20


# --------------------------------------------------------------------------------------- schema
def _patterns_compile(patterns: tuple[str, ...], _context: Mapping[str, Any]) -> tuple[str, ...]:
    for pattern in patterns:
        if not pattern:
            raise ValueError("patterns must not be empty strings")
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"bad regex {pattern!r}: {err}") from err
    return patterns


def _name_matches_file(name: str, context: Mapping[str, Any]) -> str:
    expected = context.get("expected_name")
    if expected is not None and name != expected:
        raise ValueError(f"must equal the file name without .toml ({expected!r}), got {name!r}")
    return name


class ProfileMatch(Record):
    """Which devices a profile is for; every criterion given must hold (empty lists match all).

    A profile with neither ``device_tree_model`` nor ``machine`` patterns is never auto-detected;
    it can still be chosen by name.
    """

    device_tree_model: Annotated[
        tuple[str, ...],
        Rule(
            max_length=16,
            description="Regexes searched in /proc/device-tree/model (e.g. "
            "'^Raspberry Pi 4 Model B').",
        ),
        Check(_patterns_compile),
    ] = ()
    machine: Annotated[
        tuple[str, ...],
        Rule(
            max_length=16,
            description="Regexes that must match all of platform.machine() (e.g. 'aarch64|arm64').",
        ),
        Check(_patterns_compile),
    ] = ()
    min_mem_mib: Annotated[
        int,
        Rule(
            ge=0, le=_MAX_MEM_MIB, description="Smallest total memory (MemTotal, MiB), inclusive."
        ),
    ] = 0
    max_mem_mib: Annotated[
        int | None,
        Rule(
            ge=1,
            le=_MAX_MEM_MIB,
            description="Largest total memory (MemTotal, MiB), inclusive; omit for no upper bound.",
        ),
    ] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_mem_mib is not None and self.max_mem_mib < self.min_mem_mib:
            raise_problems(
                "ProfileMatch",
                [(("max_mem_mib",), f"must be >= min_mem_mib ({self.min_mem_mib})")],
            )

    @property
    def auto_detectable(self) -> bool:
        """Whether auto-detection considers this profile at all."""
        return bool(self.device_tree_model or self.machine)

    def matches(self, *, device_tree_model: str | None, mem_total_mib: int, machine: str) -> bool:
        """Whether a device with these facts is one this profile is for."""
        if not self.auto_detectable:
            return False
        if self.device_tree_model and not (
            device_tree_model is not None
            and any(re.search(p, device_tree_model) for p in self.device_tree_model)
        ):
            return False
        if self.machine and not any(re.fullmatch(p, machine) for p in self.machine):
            return False
        if mem_total_mib < self.min_mem_mib:
            return False
        return self.max_mem_mib is None or mem_total_mib <= self.max_mem_mib

    def specificity(self) -> tuple[int, int, int, int]:
        """Sort key: a device-tree match beats a memory range beats an architecture match."""
        bounded = self.min_mem_mib > 0 or self.max_mem_mib is not None
        upper = self.max_mem_mib if self.max_mem_mib is not None else _MAX_MEM_MIB
        return (
            int(bool(self.device_tree_model)),
            int(bounded),
            -(upper - self.min_mem_mib),
            int(bool(self.machine)),
        )


class ThermalSettings(Record):
    """Thermal throttling: slow down before the SoC firmware does, stop before it overheats."""

    throttle_c: Annotated[
        float, Rule(ge=30, le=110, description="SoC temperature (°C) from which ticks slow down.")
    ]
    critical_c: Annotated[
        float,
        Rule(
            ge=30,
            le=120,
            description="Temperature (°C) from which all groups pause until it falls "
            "below throttle_c.",
        ),
    ]
    throttled_tick_factor: Annotated[
        float, Rule(gt=0, le=1, description="Tick rate multiplier while throttled, in (0, 1].")
    ]
    zone_glob: Annotated[
        str,
        Rule(
            min_length=1,
            max_length=256,
            description="Glob of sysfs files in millidegrees Celsius; the hottest zone counts.",
        ),
    ] = "/sys/class/thermal/thermal_zone*/temp"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.critical_c <= self.throttle_c:
            raise_problems(
                "ThermalSettings",
                [(("critical_c",), f"must be > throttle_c ({self.throttle_c:g} °C)")],
            )


class MemoryTier(Record):
    """Memory numbers for devices of one profile that have at least ``min_mem_mib`` of RAM."""

    min_mem_mib: Annotated[
        int,
        Rule(ge=1, le=_MAX_MEM_MIB, description="This tier applies from this MemTotal (MiB) up."),
    ]
    memory_budget_mb: Annotated[
        int, Rule(ge=8, le=_MAX_MB, description="MiB that models and agents may reserve.")
    ]
    soft_limit_mb: Annotated[
        int, Rule(ge=16, le=_MAX_MB, description="RSS (MiB) that starts degradation.")
    ]
    memory_high_mb: Annotated[int, Rule(ge=16, le=_MAX_MB, description="systemd MemoryHigh (MiB).")]
    memory_max_mb: Annotated[int, Rule(ge=16, le=_MAX_MB, description="systemd MemoryMax (MiB).")]
    max_agents: Annotated[
        int, Rule(ge=1, le=10_000_000, description="Sanity cap on agents in all groups.")
    ]


class FirmwareProfile(Record):
    """Everything the daemon needs to know about one class of device. All sizes in MiB."""

    name: Annotated[
        str,
        Rule(
            pattern=_NAME_PATTERN,
            description="Profile name; must equal the file name without .toml.",
        ),
        Check(_name_matches_file),
    ]
    description: Annotated[
        str, Rule(min_length=1, max_length=200, description="One line for humans.")
    ]
    match: Annotated[ProfileMatch, Rule(description="Auto-detection criteria.")] = field(
        default_factory=ProfileMatch
    )
    memory_budget_mb: Annotated[
        int,
        Rule(
            ge=8,
            le=_MAX_MB,
            description="MiB that models and agents may reserve (shared tables, "
            "beliefs, histories).",
        ),
    ]
    base_mb: Annotated[
        int,
        Rule(
            ge=8,
            le=4096,
            description="The daemon's own overhead (interpreter, libraries), counted "
            "as used at start.",
        ),
    ]
    soft_limit_mb: Annotated[
        int,
        Rule(
            ge=16,
            le=_MAX_MB,
            description="RSS (MiB) above which the daemon degrades; < memory_budget_mb + base_mb.",
        ),
    ]
    memory_high_mb: Annotated[
        int,
        Rule(
            ge=16,
            le=_MAX_MB,
            description="systemd MemoryHigh for the unit; >= memory_budget_mb + base_mb.",
        ),
    ]
    memory_max_mb: Annotated[
        int,
        Rule(ge=16, le=_MAX_MB, description="systemd MemoryMax for the unit; > memory_high_mb."),
    ]
    memory_tiers: Annotated[
        tuple[MemoryTier, ...],
        Rule(
            max_length=16,
            description="Memory numbers for larger variants of the device, by "
            "ascending min_mem_mib.",
        ),
    ] = ()
    inference_threads: Annotated[
        int, Rule(ge=1, le=64, description="Threads for numpy/onnxruntime/LiteRT inference.")
    ]
    workers: Annotated[
        int,
        Rule(
            ge=0,
            le=64,
            description="Processes that step a large Active Inference group's blocks (the board's "
            "cores); 0: the CPUs the daemon may run on.",
        ),
    ] = 0
    tick_hz: Annotated[
        float, Rule(gt=0, le=1000, description="Default tick rate of the scheduler (Hz).")
    ]
    history_capacity: Annotated[
        int, Rule(ge=1, le=65536, description="Default number of steps kept per agent.")
    ]
    snapshot_interval_s: Annotated[
        float, Rule(ge=1, le=86400, description="Seconds between periodic state snapshots.")
    ]
    max_snapshot_writes_per_hour: Annotated[
        int,
        Rule(
            ge=1,
            le=3600,
            description="Cap on snapshot writes of any cause (SD-card wear); extra "
            "ones are skipped.",
        ),
    ]
    thermal: Annotated[ThermalSettings, Rule(description="Thermal throttling.")]
    watchdog_interval_s: Annotated[
        float,
        Rule(
            ge=1, le=600, description="systemd WatchdogSec; pinged only while ticks make progress."
        ),
    ]
    telemetry_interval_s: Annotated[
        float, Rule(ge=1, le=3600, description="Seconds between telemetry publications.")
    ]
    max_agents: Annotated[
        int,
        Rule(ge=1, le=10_000_000, description="Sanity cap on the number of agents in all groups."),
    ]

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = _memory_problems((), self, self.base_mb)
        previous = 0
        for index, tier in enumerate(self.memory_tiers):
            loc: Loc = ("memory_tiers", index)
            if tier.min_mem_mib <= previous:
                problems.append(((*loc, "min_mem_mib"), f"tiers must ascend: must be > {previous}"))
            previous = tier.min_mem_mib
            problems += _memory_problems(loc, tier, self.base_mb)
        per_hour = 3600 / self.snapshot_interval_s
        if per_hour > self.max_snapshot_writes_per_hour:
            problems.append(
                (
                    ("snapshot_interval_s",),
                    f"{self.snapshot_interval_s:g} s means {per_hour:.0f} snapshots an hour, more "
                    f"than max_snapshot_writes_per_hour ({self.max_snapshot_writes_per_hour})",
                )
            )
        slowest = 1 / (self.tick_hz * self.thermal.throttled_tick_factor)
        if slowest * 2 > self.watchdog_interval_s:
            problems.append(
                (
                    ("watchdog_interval_s",),
                    f"must be at least twice the slowest (throttled) tick period, {slowest:g} s",
                )
            )
        raise_problems("FirmwareProfile", problems)

    # -- derived numbers
    @property
    def total_budget_mb(self) -> int:
        """The MemoryBudget total: ``memory_budget_mb + base_mb``."""
        return self.memory_budget_mb + self.base_mb

    @property
    def total_budget_bytes(self) -> int:
        """``MemoryBudget(total_bytes=...)``; pass ``base_bytes`` and ``soft_limit_bytes`` too."""
        return self.total_budget_mb * MiB

    @property
    def base_bytes(self) -> int:
        return self.base_mb * MiB

    @property
    def soft_limit_bytes(self) -> int:
        return self.soft_limit_mb * MiB

    @property
    def tick_period_s(self) -> float:
        return 1.0 / self.tick_hz

    def for_memory(self, mem_total_bytes: int) -> FirmwareProfile:
        """This profile with the memory tier for a device of ``mem_total_bytes`` applied.

        The result has no tiers left; without tiers, the profile itself is returned.
        """
        if not self.memory_tiers:
            return self
        mem_mib = mem_total_bytes // MiB
        update: dict[str, Any] = {"memory_tiers": ()}
        for tier in self.memory_tiers:
            if mem_mib >= tier.min_mem_mib:
                update.update({f.name: getattr(tier, f.name) for f in dataclasses.fields(tier)})
        update.pop("min_mem_mib", None)
        return dataclasses.replace(self, **update)


def _memory_problems(
    loc: Loc, numbers: FirmwareProfile | MemoryTier, base_mb: int
) -> list[Problem]:
    total = numbers.memory_budget_mb + base_mb
    problems: list[Problem] = []
    if not base_mb < numbers.soft_limit_mb < total:
        problems.append(
            (
                (*loc, "soft_limit_mb"),
                f"must be between base_mb ({base_mb}) and memory_budget_mb + base_mb ({total}), "
                "exclusive",
            )
        )
    if numbers.memory_high_mb < total:
        problems.append(
            (
                (*loc, "memory_high_mb"),
                f"must be >= memory_budget_mb + base_mb ({total}), or systemd throttles a daemon "
                "that keeps to its budget",
            )
        )
    if numbers.memory_max_mb <= numbers.memory_high_mb:
        problems.append(
            ((*loc, "memory_max_mb"), f"must be > memory_high_mb ({numbers.memory_high_mb})")
        )
    return problems


# -------------------------------------------------------------------------------------- loading
def shipped_profiles_dir() -> Path:
    """The profiles shipped with the package (``edge_agent/firmware_profiles``)."""
    return PACKAGE_DIR / "firmware_profiles"


def overrides_dir() -> Path:
    """The operator's profiles: ``$EDGE_AGENT_PROFILES_OVERRIDES`` or /etc/edge-agent/profiles.d."""
    return Path(os.environ.get(OVERRIDES_DIR_ENV) or DEFAULT_OVERRIDES_DIR).expanduser()


def default_profiles_dir() -> Path:
    """``$EDGE_AGENT_PROFILES_DIR`` if set, else the shipped profiles."""
    env = os.environ.get(PROFILES_DIR_ENV)
    folder = Path(env).expanduser() if env else shipped_profiles_dir()
    if not (folder.is_dir() and any(folder.glob("*.toml"))):
        message = f"no firmware profiles in {folder}; set {PROFILES_DIR_ENV} or reinstall"
        raise ConfigError(message, path=None, problems=[message])
    return folder


def load_profile_file(path: str | Path) -> FirmwareProfile:
    """Load one profile file; its ``name`` must equal the file name without ``.toml``."""
    document = TomlDocument.read(path)
    return validate_toml(FirmwareProfile, document, context={"expected_name": Path(path).stem})


def load_profiles(directory: str | Path | None = None) -> dict[str, FirmwareProfile]:
    """Every ``*.toml`` profile in ``directory`` (default: :func:`default_profiles_dir`), by name.

    Raises ConfigError listing the problems of every bad file, ``file:line: field: problem``.
    """
    folder = Path(directory) if directory is not None else default_profiles_dir()
    files = sorted(folder.glob("*.toml")) if folder.is_dir() else []
    if not files:
        message = f"{folder}: no firmware profiles (*.toml) in this directory"
        raise ConfigError(message, path=str(folder), problems=[message])
    if directory is None:  # the operator's profiles.d adds and replaces by name
        extra = overrides_dir()
        if extra.is_dir():
            files += sorted(extra.glob("*.toml"))
    profiles: dict[str, FirmwareProfile] = {}
    problems: list[str] = []
    for file in files:
        try:
            profile = load_profile_file(file)
        except ConfigError as err:
            problems += err.problems
            continue
        profiles[profile.name] = profile
    if problems:
        raise ConfigError("\n".join(problems), path=str(folder), problems=problems)
    return profiles


def get_profile(
    name: str, profiles: Mapping[str, FirmwareProfile] | None = None
) -> FirmwareProfile:
    """The profile called ``name`` (tiers not applied); ConfigError names the ones that exist."""
    known = profiles if profiles is not None else load_profiles()
    try:
        return known[name]
    except KeyError:
        message = f"unknown firmware profile {name!r}; known: {', '.join(sorted(known))}"
        raise ConfigError(message, path=None, problems=[message]) from None


# ------------------------------------------------------------------------------------ detection
@dataclass(frozen=True)
class DeviceFacts:
    """What auto-detection looks at."""

    device_tree_model: str | None
    mem_total_bytes: int
    machine: str

    @property
    def mem_total_mib(self) -> int:
        return self.mem_total_bytes // MiB

    def describe(self) -> str:
        model = repr(self.device_tree_model) if self.device_tree_model else "no device-tree model"
        return f"{model}, {self.mem_total_mib} MiB, machine {self.machine!r}"


def read_device_facts(model_paths: Sequence[Path] = DEVICE_TREE_MODEL_PATHS) -> DeviceFacts:
    """Read the device-tree model, total memory and CPU architecture of this machine."""
    model: str | None = None
    for candidate in model_paths:
        try:
            raw = candidate.read_bytes()
        except OSError:
            continue
        model = raw.rstrip(b"\0\n ").decode("utf-8", "replace") or None
        break
    return DeviceFacts(
        device_tree_model=model, mem_total_bytes=_mem_total_bytes(), machine=platform.machine()
    )


def _mem_total_bytes() -> int:
    """MemTotal: from ``/proc/meminfo`` where there is one (psutil, which the daemon then does
    not load, costs 2 MB), else psutil's."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    import psutil  # noqa: PLC0415 - where there is no /proc

    return int(psutil.virtual_memory().total)


def detect_profile(
    profiles: Mapping[str, FirmwareProfile],
    *,
    device_tree_model: str | None,
    mem_total_bytes: int,
    machine: str,
    override: str | None = None,
) -> FirmwareProfile:
    """The profile for a device with these facts, its memory tier applied.

    ``override`` (a profile name other than ``"auto"``) skips detection. Otherwise the matching
    profile with the highest :meth:`ProfileMatch.specificity` wins; no match, or a tie between
    the best, raises ConfigError that tells the operator to name a profile.
    """
    if override is not None and override != AUTO:
        return get_profile(override, profiles).for_memory(mem_total_bytes)
    facts = DeviceFacts(device_tree_model, mem_total_bytes, machine)
    candidates = [
        p
        for p in profiles.values()
        if p.match.matches(
            device_tree_model=device_tree_model, mem_total_mib=facts.mem_total_mib, machine=machine
        )
    ]
    if not candidates:
        message = (
            f"no firmware profile matches this device ({facts.describe()}); set [daemon] profile "
            f"to one of: {', '.join(sorted(profiles))}"
        )
        raise ConfigError(message, path=None, problems=[message])
    best = max(p.match.specificity() for p in candidates)
    winners = sorted(p.name for p in candidates if p.match.specificity() == best)
    if len(winners) > 1:
        message = (
            f"firmware profiles {', '.join(winners)} match this device ({facts.describe()}) "
            "equally well; set [daemon] profile to one of them"
        )
        raise ConfigError(message, path=None, problems=[message])
    return profiles[winners[0]].for_memory(mem_total_bytes)


def select_profile(
    name: str,
    profiles: Mapping[str, FirmwareProfile] | None = None,
    facts: DeviceFacts | None = None,
) -> FirmwareProfile:
    """What the daemon runs with for ``[daemon] profile = name`` (``"auto"`` or a name).

    ``facts`` default to :func:`read_device_facts` of this machine; they choose the profile for
    ``"auto"`` and the memory tier of a named profile that has tiers.
    """
    known = profiles if profiles is not None else load_profiles()
    if name != AUTO:
        profile = get_profile(name, known)
        if not profile.memory_tiers:
            return profile
    device = facts if facts is not None else read_device_facts()
    return detect_profile(
        known,
        device_tree_model=device.device_tree_model,
        mem_total_bytes=device.mem_total_bytes,
        machine=device.machine,
        override=name,
    )


# ------------------------------------------------------------------------------------ reporting
def _mem_range(match: ProfileMatch) -> str:
    if match.max_mem_mib is None:
        return f">= {match.min_mem_mib} MiB" if match.min_mem_mib else "any"
    return f"{match.min_mem_mib}-{match.max_mem_mib} MiB"


def format_profiles_table(profiles: Mapping[str, FirmwareProfile]) -> str:
    """A plain-text table of profiles for ``edge-agent profiles`` (sizes in MiB)."""
    header = (
        "NAME",
        "MEMORY MATCH",
        "BUDGET",
        "BASE",
        "SOFT",
        "HIGH",
        "MAX",
        "THREADS",
        "TICK HZ",
        "HISTORY",
        "MAX AGENTS",
        "DESCRIPTION",
    )
    rows = [header]
    for name in sorted(profiles):
        p = profiles[name]
        tiers = f" (+{len(p.memory_tiers)} memory tiers)" if p.memory_tiers else ""
        rows.append(
            (
                p.name,
                _mem_range(p.match),
                str(p.memory_budget_mb),
                str(p.base_mb),
                str(p.soft_limit_mb),
                str(p.memory_high_mb),
                str(p.memory_max_mb),
                str(p.inference_threads),
                f"{p.tick_hz:g}",
                str(p.history_capacity),
                str(p.max_agents),
                p.description + tiers,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines)


def explain_profile(profile: FirmwareProfile) -> str:
    """What each number of ``profile`` means, for ``edge-agent profile show NAME``."""
    p = profile
    m = p.match
    t = p.thermal
    width = len("max_snapshot_writes_per_hour")

    def row(label: str, value: float, meaning: str) -> str:
        return f"  {label:<{width}} {value:>7g}  {meaning}"

    throttled = p.tick_hz * t.throttled_tick_factor
    lines = [
        f"{p.name}: {p.description}",
        "",
        "Auto-detection (every criterion given must hold; the most specific match wins)",
        "  device-tree model: "
        + (" or ".join(repr(x) for x in m.device_tree_model) if m.device_tree_model else "any"),
        "  machine:           " + (" or ".join(repr(x) for x in m.machine) if m.machine else "any"),
        f"  total memory:      {_mem_range(m)} (MemTotal as the kernel reports it)",
    ]
    if not m.auto_detectable:
        lines.append("  (no model or machine pattern: chosen only by name)")
    lines += [
        "",
        "Memory (MiB)",
        row(
            "memory_budget_mb",
            p.memory_budget_mb,
            "what models and agents may reserve: shared int8 tables, beliefs, histories, scratch",
        ),
        row(
            "base_mb",
            p.base_mb,
            "the daemon itself (interpreter, numpy, MQTT client), counted as used from the start",
        ),
        row(
            "budget + base",
            p.total_budget_mb,
            "the memory budget's total: the largest RSS the daemon plans for; a config that "
            "needs more is refused at load",
        ),
        row(
            "soft_limit_mb",
            p.soft_limit_mb,
            "RSS above this degrades the daemon: histories shrink, then low-priority groups pause",
        ),
        row(
            "memory_high_mb",
            p.memory_high_mb,
            "systemd MemoryHigh: above it the kernel reclaims and slows the unit",
        ),
        row(
            "memory_max_mb",
            p.memory_max_mb,
            "systemd MemoryMax: above it the kernel kills the unit (OOM)",
        ),
    ]
    lines += [
        f"  with >= {tier.min_mem_mib} MiB of RAM: budget {tier.memory_budget_mb}, soft "
        f"{tier.soft_limit_mb}, MemoryHigh {tier.memory_high_mb}, MemoryMax "
        f"{tier.memory_max_mb}, max_agents {tier.max_agents}"
        for tier in p.memory_tiers
    ]
    lines += [
        "",
        "Scheduling",
        row("inference_threads", p.inference_threads, "threads for one batched inference call"),
        row("workers", p.workers, "processes stepping a large group's blocks (0: every CPU)"),
        row(
            "tick_hz",
            p.tick_hz,
            f"default tick rate: every agent steps every {1000 * p.tick_period_s:g} ms",
        ),
        row(
            "history_capacity",
            p.history_capacity,
            f"default steps kept per agent: {p.history_capacity / p.tick_hz:g} s at tick_hz",
        ),
        row("max_agents", p.max_agents, "a config with more agents in all groups is refused"),
        "",
        "Storage",
        row(
            "snapshot_interval_s",
            p.snapshot_interval_s,
            f"a snapshot of beliefs and history every {p.snapshot_interval_s / 60:g} min "
            f"({3600 / p.snapshot_interval_s:g} an hour)",
        ),
        row(
            "max_snapshot_writes_per_hour",
            p.max_snapshot_writes_per_hour,
            "cap on snapshot writes of any cause (shutdown, commands), to spare the SD card",
        ),
        "",
        f"Thermal (the hottest of {t.zone_glob})",
        row(
            "throttle_c",
            t.throttle_c,
            f"from here ticks slow to {t.throttled_tick_factor:g} x tick_hz "
            f"({throttled:g} Hz by default)",
        ),
        row(
            "critical_c",
            t.critical_c,
            "from here all groups pause until the temperature falls below throttle_c",
        ),
        "",
        "Supervision",
        row(
            "watchdog_interval_s",
            p.watchdog_interval_s,
            "systemd WatchdogSec: pinged only while ticks complete; a stall this long restarts "
            "the daemon",
        ),
        row("telemetry_interval_s", p.telemetry_interval_s, "seconds between telemetry messages"),
    ]
    return "\n".join(lines)
