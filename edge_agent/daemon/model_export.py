"""``edge-agent export-model``: a learning group's model as its daemon last saved it, as ``.npz``.

The learned model is read from the newest readable snapshot in the group's state directory, read
only: the daemon may be running (its snapshots are written whole and renamed into place) or
stopped. The group's model comes from the config as the daemon loads it (a bundle deployed to the
group instead, when the daemon would run that one), and the snapshot must have been written by
that model (the key snapshots are restored by) with the group's learning table (the counts'
``learn.identity``, as the daemon checks it). The file holds pymdp's keys (``A0``.. as the
agents infer with them, ``C``, ``E``, the counts ``pA1``..) and ``meta_*`` keys saying where it
came from; ``edge-agent-host convert aif`` makes a bundle of it like of any other ``.npz``
(docs/learning.md).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.config.daemon import GroupConfig, read_config
from edge_agent.core.contract import MayLearn
from edge_agent.core.learning_export import learned_arrays
from edge_agent.daemon.admission import load_group_model, trusted_keys
from edge_agent.daemon.group_runtime import model_spec_key, with_bundle
from edge_agent.daemon.snapshots.format import LoadedSnapshot, read_snapshot
from edge_agent.errors import InputError, SnapshotError
from edge_agent.fleet.overlay import read_overlay
from edge_agent.fsutil import atomic_writer
from edge_agent.kinds import get_kind
from edge_agent.kinds.aif import aif_of

__all__ = ["ExportReport", "export_model", "latest_snapshot"]

SNAPSHOT_DIR = "snapshots"


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_model` wrote, and from what."""

    group: str
    out: Path
    nbytes: int
    snapshot: Path
    created: float
    versions: dict[str, int] = field(default_factory=dict)
    bundle: str | None = None

    def describe(self) -> str:
        """The line ``export-model`` prints."""
        ago = max(0.0, time.time() - self.created)
        learned = ", ".join(f"{k} version {v}" for k, v in self.versions.items())
        source = f" (bundle {self.bundle})" if self.bundle else ""
        return (
            f"exported group {self.group!r}{source}: {learned} -> {self.out} "
            f"({self.nbytes} bytes), from snapshot {self.snapshot} written {ago:.0f} s ago"
        )


def latest_snapshot(state_dir: Path) -> LoadedSnapshot:
    """The newest snapshot of ``state_dir`` that reads and verifies (nothing is moved or
    deleted); InputError in one line when there is none."""
    folder = Path(state_dir) / SNAPSHOT_DIR
    try:
        names = [p for p in folder.iterdir() if p.name.startswith("snapshot-")]
    except FileNotFoundError:
        raise InputError(
            f"{folder}: no snapshots (has the daemon run with this state_dir?)"
        ) from None
    except OSError as err:
        raise InputError(f"{folder}: cannot list the snapshots: {err.strerror or err}") from err

    def seq(p: Path) -> int:
        digits = p.name.removeprefix("snapshot-").removesuffix(".eas")
        return int(digits) if digits.isdigit() else -1

    problems: list[str] = []
    for path in sorted(names, key=seq, reverse=True):
        if seq(path) < 0:
            continue
        try:
            return read_snapshot(path)
        except SnapshotError as err:  # damaged, or removed by the daemon meanwhile
            problems.append(str(err))
    if problems:
        raise InputError(f"no readable snapshot in {folder}: {problems[0]}")
    raise InputError(f"{folder}: no snapshots (has the daemon run with this state_dir?)")


def _group(config_groups: tuple[GroupConfig, ...] | list[GroupConfig], name: str,
           path: str) -> GroupConfig:
    for g in config_groups:
        if g.name == name:
            return g
    known = ", ".join(g.name for g in config_groups) or "none"
    raise InputError(f"{path}: no group {name!r} (groups: {known})")


def export_model(
    config_path: Path,
    group: str,
    out: Path,
    *,
    state_dir: Path | None = None,
    agent: int | None = None,
) -> ExportReport:
    """Write group ``group``'s learned model (see the module doc) to ``out`` (``.npz``).

    ``state_dir`` overrides the config's ``[daemon] state_dir``; ``agent`` picks one agent's
    counts of a group that learns per agent. InputError (one line) for a group that does not
    exist or does not learn, no readable snapshot, a snapshot without the group or written by
    another model, counts that are damaged; ConfigError for the config itself.
    """
    if out.suffix != ".npz":
        raise InputError(f"{out}: the learned model is written as .npz (name it OUT.npz)")
    source = read_config(config_path)
    config = source.config
    cfg = _group(config.groups, group, source.path)
    folder = Path(state_dir) if state_dir is not None else Path(config.daemon.state_dir)
    deployed = read_overlay(folder).get(group)
    if deployed is not None and deployed.config_model == model_spec_key(cfg):
        cfg = with_bundle(cfg, Path(deployed.path))
    loaded = load_group_model(cfg, config, trusted_keys(config, source))
    aif = aif_of(loaded)
    learning = aif.learning if aif is not None else None
    if aif is None or learning is None:
        raise InputError(
            f"group {group!r} does not learn (it has no [groups.learning] table): nothing to export"
        )
    snap = latest_snapshot(folder)
    meta = (snap.meta.get("groups") or {}).get(group)
    if not meta:
        raise InputError(
            f"{snap.path}: no group {group!r} in it (the daemon snapshots it at its next "
            "snapshot; send the 'snapshot' command or wait)"
        )
    probe = get_kind(loaded.kind).build(
        loaded, cfg, 1, budget=None, history_capacity=0, threads=1, workers=1
    )
    try:
        key = probe.key
        learns = probe.learning if isinstance(probe, MayLearn) else None
        learned_from = learns.identity() if learns is not None else None
    finally:
        probe.release()
    if meta.get("key") != key:
        raise InputError(
            f"{snap.path}: group {group!r} was saved by another model than the config's "
            "(the config or the deployed bundle changed since)"
        )
    state = snap.arrays.under(f"group.{group}.")
    saved_from = state.get("learn.identity")
    if saved_from is None or np.asarray(saved_from, dtype=np.uint8).tobytes() != learned_from:
        raise InputError(
            f"{snap.path}: group {group!r} holds no counts of its [groups.learning] table "
            "(learned with another table, prior or scope, or not at all: the daemon would "
            "start this group from its priors)"
        )
    n = int(meta.get("agents", 0))
    per_agent = learning.settings.scope == "per_agent"
    if per_agent and agent is None:
        raise InputError(
            f"group {group!r} learns per agent ({n} agents): export one with --agent I "
            f"(0..{n - 1})"
        )
    if not per_agent and agent is not None:
        raise InputError(
            f"--agent: group {group!r} learns one set of counts for all its agents (shared)"
        )
    arrays = learned_arrays(aif.model, learning, state, name=group, agent=agent)
    arrays.update(_provenance(group, snap, loaded.bundle_name, loaded.bundle_sha256))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    data = buf.getvalue()
    try:
        with atomic_writer(out) as fh:
            fh.write(data)
    except OSError as err:
        raise InputError(f"{out}: cannot write: {err.strerror or err}") from err
    versions = {
        k.removeprefix("meta_version_"): int(v) for k, v in arrays.items()
        if k.startswith("meta_version_")
    }
    return ExportReport(group, out, len(data), snap.path, snap.created, versions,
                        loaded.bundle_name)


def _provenance(
    group: str, snap: LoadedSnapshot, bundle: str | None, sha256: str | None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "meta_group": np.array(group),
        "meta_snapshot": np.array(str(snap.path)),
        "meta_created": np.array(snap.created, dtype=np.float64),
    }
    if bundle is not None and sha256 is not None:
        out["meta_bundle"] = np.array(bundle)
        out["meta_bundle_sha256"] = np.array(sha256)
    return out
