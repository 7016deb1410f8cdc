"""Admission: a config's groups checked, planned against the budget, built and wired.

Everything the daemon checks before it runs a config is here, and ``check-config``, ``run`` and a
SIGHUP reload all come through :func:`admit`, so they refuse a file with the same lines. In
order: the profile and what it allows, its budget against the cgroup's memory limit
(:mod:`edge_agent.daemon.cgroup`), the state directory, the key directories and the MQTT
password and TLS files the daemon reads, every group's model (:func:`load_group_model`:
built-in, or a verified bundle of kind ``aif``, ``neural`` or ``aif+perception``, with a
``perception`` bundle when the group names one; its dimensions checked against the group's
world), then the memory plan of every group
(:func:`~edge_agent.daemon.group_runtime.plan_requests`) before anything is allocated.
Deployed bundles (the overlay of :mod:`edge_agent.fleet.deploy`) replace configured models
where valid.
Nothing here imports the service module.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.bundle.signing import TrustedKeys
from edge_agent.config.daemon import (
    BundleModel,
    ConfigFile,
    DaemonConfig,
    GroupConfig,
    resolve_profile,
)
from edge_agent.config.group_tables import hook
from edge_agent.config.profiles import FirmwareProfile
from edge_agent.config.toml_lines import Problem
from edge_agent.core.budget import MemoryBudget, format_bytes
from edge_agent.daemon.cgroup import CgroupMemory, read_cgroup_memory
from edge_agent.daemon.group_runtime import (
    GroupRuntime,
    make_agents,
    make_runtime,
    model_spec_key,
    plan_requests,
    with_bundle,
)
from edge_agent.errors import BudgetError, BundleError, ConfigError, EdgeAgentError
from edge_agent.fleet.overlay import OverlayEntry
from edge_agent.kinds import get_kind, kind_name
from edge_agent.kinds.base import LoadedModel

if TYPE_CHECKING:
    from edge_agent.bundle.loader import Bundle

logger = logging.getLogger(__name__)


def trusted_keys(config: DaemonConfig, source: ConfigFile | None = None) -> TrustedKeys | None:
    """The daemon's trusted signing keys, or None when none are configured.

    With ``source`` (the config file), a directory that cannot be used is a ConfigError at the
    line of ``[daemon] trusted_keys_dir``."""
    return _keys_from(config.daemon.trusted_keys_dir, source, ("daemon", "trusted_keys_dir"))


def hub_keys(config: DaemonConfig, source: ConfigFile | None = None) -> TrustedKeys | None:
    """Keys whose signed commands the daemon obeys: ``[mqtt] hub_keys_dir``, else the trusted."""
    if config.mqtt.hub_keys_dir is None:
        return trusted_keys(config, source)
    return _keys_from(config.mqtt.hub_keys_dir, source, ("mqtt", "hub_keys_dir"))


def _keys_from(
    directory: Path | None, source: ConfigFile | None, loc: tuple[str, ...]
) -> TrustedKeys | None:
    if directory is None:
        return None
    try:
        return TrustedKeys.from_dir(directory)
    except BundleError as err:
        if source is None:
            raise
        raise source.error([(loc, str(err))]) from err


def mqtt_password(config: DaemonConfig, source: ConfigFile | None = None) -> str | None:
    """The first line of ``[mqtt] password_file`` (None when it is not set); a file that cannot
    be read is a ConfigError, at the key's line when ``source`` is given."""
    path = config.mqtt.password_file
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        problem = f"{path}: cannot read: {getattr(err, 'strerror', None) or err}"
        if source is None:
            raise ConfigError(f"[mqtt] password_file {problem}") from err
        raise source.error([(("mqtt", "password_file"), problem)]) from err
    return lines[0] if lines else ""


def _readable(path: Path) -> str | None:
    """None when ``path`` can be opened and read by this user, else what stops it."""
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as err:
        return f"{path}: cannot read: {err.strerror or err}"
    return None


def check_tls_files(config: DaemonConfig, source: ConfigFile | None = None) -> None:
    """``[mqtt.tls]``: each of ``ca_file``, ``cert_file`` and ``key_file`` that is set can be
    read, and they load as TLS does (a PEM CA bundle; a certificate and its key). A problem is a
    ConfigError at the line of the key, instead of a failed TLS setup at every reconnect."""
    tls = config.mqtt.tls
    if not tls.enabled:
        return
    files = {"ca_file": tls.ca_file, "cert_file": tls.cert_file, "key_file": tls.key_file}
    problems: list[Problem] = []
    for key, path in files.items():
        if path is not None and (problem := _readable(path)) is not None:
            problems.append((("mqtt", "tls", key), problem))
    if not problems:
        import ssl  # noqa: PLC0415 - only a daemon with TLS, which imports it anyway

        try:
            ctx = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file) if tls.ca_file else None
            )
        except (OSError, ssl.SSLError) as err:
            problems.append(
                (("mqtt", "tls", "ca_file"), f"{tls.ca_file}: not a PEM CA bundle: {err}")
            )
        else:
            if tls.cert_file is not None and tls.key_file is not None:
                try:
                    ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
                except (OSError, ssl.SSLError) as err:
                    problems.append(
                        (
                            ("mqtt", "tls", "cert_file"),
                            f"{tls.cert_file} with key {tls.key_file}: not a PEM certificate "
                            f"and its private key: {err}",
                        )
                    )
    if problems:
        if source is None:
            raise ConfigError("; ".join(f"[mqtt.tls] {key[-1]} {p}" for key, p in problems))
        raise source.error(problems)


def state_dir_problem(path: Path, *, create: bool) -> str | None:
    """Why the daemon cannot keep its state in ``path``, or None. With ``create``, the
    directory is made (with its parents) as the daemon does at start; without (``check-config``),
    only whether this user could: ``path`` a writable directory, or the nearest existing
    directory above it writable."""
    user = _user_name()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{path}: {probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "cannot write" if probe == path else f"cannot create it: {probe} is not writable"
        return f"{path}: {what} (as user {user})"
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            return f"{path}: cannot create: {err.strerror or err} (as user {user})"
    return None


def _user_name() -> str:
    try:
        import pwd  # noqa: PLC0415 - POSIX only, and only for a message

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())


def check_state_dir(source: ConfigFile, *, create: bool) -> None:
    """``[daemon] state_dir`` is usable (see :func:`state_dir_problem`); else a ConfigError at
    its line that says how to fix it."""
    problem = state_dir_problem(source.config.daemon.state_dir, create=create)
    if problem is not None:
        hint = (
            "; give the demo a directory it can write: --state-dir DIR"
            if source.path.startswith("<embedded")
            else "; create it for the daemon's user or choose a state_dir it can write"
        )
        raise source.error([(("daemon", "state_dir"), problem + hint)])


#: A budget above this share of the cgroup's ``memory.max`` gets a warning: little is left
#: for what the budget does not count (the Python heap's growth, page cache of the state files).
CGROUP_WARN_FRACTION = 0.9


def cgroup_memory_problems(
    profile: FirmwareProfile, limits: CgroupMemory | None, *, under_systemd: bool
) -> tuple[str | None, str | None]:
    """``(refusal, warning)`` for ``profile``'s budget against the cgroup's memory limits: a
    refusal when the budget (``memory_budget_mb + base_mb``) is above ``memory.max`` (the
    kernel would OOM-kill the daemon as it fills), a warning when it is above ``memory.high``
    or within 10 % of ``memory.max``."""
    if limits is None or (limits.max_bytes is None and limits.high_bytes is None):
        return None, None
    total = profile.total_budget_bytes
    budget = (
        f"profile {profile.name!r} budgets {format_bytes(total)} (memory_budget_mb "
        f"{profile.memory_budget_mb} + base_mb {profile.base_mb})"
    )
    fix = (
        f"set the unit's limits to the profile's: edge-agent systemd-dropin --profile "
        f"{profile.name} | sudo tee /etc/systemd/system/edge-agent.service.d/profile.conf && "
        "sudo systemctl daemon-reload && sudo systemctl restart edge-agent"
        if under_systemd
        else "raise the cgroup's memory limit (a container's --memory, a unit's MemoryMax=)"
    )
    if limits.max_bytes is not None and total > limits.max_bytes:
        return (
            f"{budget}, above this process's cgroup memory limit of "
            f"{format_bytes(limits.max_bytes)} ({limits.max_file}): {fix}, or choose a profile "
            "with a smaller budget"
        ), None
    if limits.high_bytes is not None and total > limits.high_bytes:
        return None, (
            f"{budget}, above the cgroup's memory.high of {format_bytes(limits.high_bytes)}: the "
            f"kernel will throttle the daemon before its budget is full; {fix}"
        )
    if limits.max_bytes is not None and total > CGROUP_WARN_FRACTION * limits.max_bytes:
        return None, (
            f"{budget}, within 10 % of the cgroup's memory limit of "
            f"{format_bytes(limits.max_bytes)} ({limits.max_file}): little is left for what "
            f"the budget does not count; {fix}"
        )
    return None, None


def check_cgroup_memory(
    source: ConfigFile, profile: FirmwareProfile, limits: CgroupMemory | None
) -> None:
    """Refuse ``profile``'s budget above the cgroup's ``memory.max`` (a ConfigError at the line
    of ``[daemon] profile``); log a warning when it is close."""
    refusal, warning = cgroup_memory_problems(
        profile, limits, under_systemd="INVOCATION_ID" in os.environ
    )
    if refusal is not None:
        raise source.error([(("daemon", "profile"), refusal)])
    if warning is not None:
        logger.warning("%s", warning)


def _verified(path: Path, cfg: GroupConfig, keys: TrustedKeys | None, what: str) -> Bundle:
    if keys is None:
        raise ConfigError(
            f"group {cfg.name!r}: {what} bundle {path} cannot be verified: set [daemon] "
            "trusted_keys_dir to the directory of the keys that sign your bundles "
            "(edge-agent-host keygen / sign)",
            path=None,
        )
    from edge_agent.bundle.loader import load_bundle  # noqa: PLC0415 - pydantic, for bundles only

    bundle = load_bundle(path, trusted_keys=keys, require_signature=True)
    logger.info(
        "group %s: %s bundle %s %s (kind %s, sha256 %s, %s)",
        cfg.name,
        what,
        bundle.manifest.name,
        bundle.manifest.version,
        bundle.manifest.kind,
        bundle.sha256[:12],
        "signed by " + bundle.key_id if bundle.signature_verified and bundle.key_id else "unsigned",
    )
    return bundle


def load_group_model(
    cfg: GroupConfig, config: DaemonConfig, keys: TrustedKeys | None
) -> LoadedModel:
    """The group's model and settings: built-in, a verified bundle (``aif``, ``neural`` or
    ``aif+perception``, with the group's ``perception`` bundle in front of an Active Inference
    model when it names one), or what a kind of one's own loads (:mod:`edge_agent.kinds`).

    A bundle's own settings apply, overridden by the settings the config sets explicitly. With
    ``[daemon] trusted_keys_dir`` set, bundles must be signed by one of those keys. With a ``sim``
    source the model must fit the simulated world.
    """
    del config  # the group's own table says everything; kept for a stable signature

    def verify(path: Path, what: str) -> Bundle:
        return _verified(path, cfg, keys, what)

    bundle = verify(cfg.model.path, "model") if isinstance(cfg.model, BundleModel) else None
    kind = get_kind(kind_name(cfg, bundle.manifest.kind if bundle is not None else None))
    loaded = kind.load(cfg, bundle, verify)
    if cfg.coordination is not None and not kind.shares_beliefs:
        raise ConfigError(
            f"group {cfg.name!r}: coordination shares Active Inference beliefs; a "
            f"{loaded.kind} group cannot take part",
            path=None,
        )
    for _key, table in cfg.tables:  # a table of another kind ([groups.planning], learning)
        refusal = hook(table, "refusal")
        if refusal is not None and (why := refusal(kind, loaded.kind)) is not None:
            raise ConfigError(f"group {cfg.name!r}: {why}", path=None)
    kind.check(cfg, loaded)
    return loaded


@dataclass(frozen=True)
class OverlayProblem:
    """A deployed bundle that was not used for ``group``; ``superseded``: the config changed."""

    group: str
    detail: str
    superseded: bool = False


def resolve_models(
    config: DaemonConfig,
    overlay: dict[str, OverlayEntry] | None = None,
    problems: list[OverlayProblem] | None = None,
    source: ConfigFile | None = None,
) -> dict[str, tuple[GroupConfig, LoadedModel]]:
    """Every group's effective config and model: a deployed bundle where the overlay has a valid
    one (see :mod:`edge_agent.fleet.deploy`), else the config's model. A configured model that
    cannot be loaded is a config problem: with ``source``, every such group is reported at its
    model's line in one ConfigError."""
    keys = trusted_keys(config, source)
    located: list[Problem] = []
    out: dict[str, tuple[GroupConfig, LoadedModel]] = {}
    for g in config.groups:
        entry = (overlay or {}).get(g.name)
        if entry is not None:
            if entry.config_model != model_spec_key(g):
                if problems is not None:
                    problems.append(
                        OverlayProblem(
                            g.name,
                            f"group {g.name!r}: the config's model changed since bundle "
                            f"{entry.sha256[:12]} was deployed; the config wins",
                            superseded=True,
                        )
                    )
            else:
                deployed = with_bundle(g, Path(entry.path))
                try:
                    loaded = load_group_model(deployed, config, keys)
                    if loaded.bundle_sha256 != entry.sha256:
                        raise BundleError(
                            f"{entry.path} is bundle {loaded.bundle_sha256}, the deployment "
                            f"recorded {entry.sha256}"
                        )
                except EdgeAgentError as err:
                    if problems is not None:
                        problems.append(
                            OverlayProblem(
                                g.name,
                                f"group {g.name!r}: deployed bundle ignored, the config's model "
                                f"runs: {err}",
                            )
                        )
                else:
                    out[g.name] = (deployed, loaded)
                    continue
        try:
            out[g.name] = (g, load_group_model(g, config, keys))
        except EdgeAgentError as err:
            if source is None:
                raise
            located.append((_problem_loc(source, g, err), str(err)))
    if located and source is not None:
        raise source.error(located)
    return out


def _problem_loc(source: ConfigFile, g: GroupConfig, err: EdgeAgentError) -> tuple[str | int, ...]:
    """Where a group's model problem is reported: a table of its kind that says it is at fault
    (the perception table's path when the perception bundle is, ``[groups.learning]``'s key,
    ``[groups.planning]``), its coordination table, else its model's path or name."""
    for _key, table in g.tables:
        keys = hook(table, "problem_keys")
        if keys is not None and (found := keys(str(err))) is not None:
            return source.group_loc(g.name, *found)
    if g.coordination is not None and "coordination" in str(err):
        return source.group_loc(g.name, "coordination")
    key = {"bundle": "path", "builtin": "name"}.get(g.model.type, "module")
    return source.group_loc(g.name, "model", key)


def build_groups(
    config: DaemonConfig,
    profile: FirmwareProfile,
    budget: MemoryBudget,
    *,
    overlay: dict[str, OverlayEntry] | None = None,
    problems: list[OverlayProblem] | None = None,
    source: ConfigFile | None = None,
) -> list[GroupRuntime]:
    """Admit the whole plan against the budget, then build every group (reserve, then allocate).

    ``overlay``: deployed bundles that replace a group's configured model (see
    :func:`resolve_models`). Raises :class:`BudgetError` with every request that does not fit
    before anything is allocated; with ``source`` (the config file), a ConfigError instead that
    names each group at the line of its ``count``. ``edge-agent check-config``, ``run`` and a
    SIGHUP reload all come through here (:func:`admit`).
    """
    models = resolve_models(config, overlay, problems, source)
    requests = []
    owner_group: dict[str, str] = {}
    for g in config.groups:
        plan = plan_requests(
            models[g.name][1], g, g.history_capacity_for(profile), g.workers_for(profile)
        )
        for owner, *_ in plan:
            owner_group.setdefault(owner, g.name)
        requests.extend(plan)
    hints = {
        g.name: f"reduce group {g.name!r} count (now {g.count}) or history_capacity, "
        "or choose a profile with a larger budget"
        for g in config.groups
    }
    for g in config.groups:  # what a kind reserves besides the agents ([groups.learning])
        plan_hints = getattr(get_kind(models[g.name][1].kind), "plan_hints", None)
        if plan_hints is not None:
            hints.update(plan_hints(g))
    try:
        budget.plan(requests, hints=hints)
    except BudgetError as err:
        if source is None or not err.offenders:
            raise
        located = source.error(
            [
                (source.group_loc(owner_group.get(owner, owner), "count"), problem)
                for owner, problem in err.offenders
            ]
        )
        raise ConfigError(
            f"{located}\n{err.summary}", path=source.path, problems=located.problems
        ) from err
    total_agents = sum(g.count for g in config.groups)
    if total_agents > profile.max_agents:
        raise BudgetError(
            f"config asks for {total_agents} agents; profile {profile.name!r} allows at most "
            f"{profile.max_agents}: reduce group counts or choose a larger profile"
        )
    groups: list[GroupRuntime] = []
    try:
        for g in config.groups:
            cfg, loaded = models[g.name]
            agents = make_agents(
                loaded,
                cfg,
                g.count,
                budget=budget,
                history_capacity=g.history_capacity_for(profile),
                threads=profile.inference_threads,
                workers=g.workers_for(profile),
            )
            groups.append(make_runtime(cfg, agents, loaded))
    except BaseException:
        for built in groups:
            built.release()
        raise
    return groups


def new_budget(profile: FirmwareProfile) -> MemoryBudget:
    """An empty budget of ``profile``: its total, soft limit and daemon base."""
    return MemoryBudget(
        profile.total_budget_bytes,
        soft_limit_bytes=profile.soft_limit_bytes,
        base_bytes=profile.base_bytes,
        profile_name=profile.name,
    )


def admit(
    source: ConfigFile,
    *,
    overlay: dict[str, OverlayEntry] | None = None,
    problems: list[OverlayProblem] | None = None,
    limits: CgroupMemory | None = None,
) -> tuple[FirmwareProfile, MemoryBudget, list[GroupRuntime]]:
    """Everything the daemon checks before it runs a config: ``check-config``, ``run`` and a
    SIGHUP reload all call this, so they refuse a file with the same lines.

    In order: the profile and what it allows (:func:`resolve_profile`), its budget against this
    process's cgroup memory limit (``limits``, default: read now), the state directory, the key
    directories, the MQTT password file and TLS files the daemon reads, every group's model, and
    the memory plan; each problem as ``file:line: field: problem`` at the key it is about.
    ``overlay`` and ``problems`` as for :func:`build_groups` (the daemon's deployed bundles).
    Returns the profile, the budget and the built groups.
    """
    profile = resolve_profile(source)
    config = source.config
    check_cgroup_memory(source, profile, read_cgroup_memory() if limits is None else limits)
    check_state_dir(source, create=False)
    if config.mqtt.enabled:
        hub_keys(config, source)
        mqtt_password(config, source)
        check_tls_files(config, source)
    budget = new_budget(profile)
    groups = build_groups(
        config, profile, budget, overlay=overlay, problems=problems, source=source
    )
    return profile, budget, groups
