"""The overlay: which deployed bundle each group runs instead of its configured model.

``deployed.json`` in the state directory maps a group to its deployed bundle (path,
sha256, and the config's model of that group at deployment time). The daemon applies it when it
builds groups, at start and on reload, so a deployed bundle survives restarts although the config
file still names the old model. A config whose model for that group has changed since wins: the
entry is dropped (the operator's newer decision). An entry whose file is missing or does not
verify is ignored with an error event, and the config's model runs.

Written by :mod:`edge_agent.fleet.deploy` (a switch, a rollback) with write-temp, fsync,
rename, fsync-directory; read by the daemon's admission (:func:`read_overlay` for readers beside
the daemon, such as ``edge-agent export-model``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Final

from edge_agent.fsutil import not_a_file, write_atomic
from edge_agent.records import Record, Rule, from_json
from edge_agent.state_faults import StateFaults

__all__ = [
    "BUNDLES_DIR",
    "DEPLOY_COUNTERS",
    "OVERLAY_FILE",
    "Overlay",
    "OverlayEntry",
    "read_json",
    "read_overlay",
    "write_json_atomic",
]

OVERLAY_FILE: Final = "deployed.json"
#: The deployment's directory in the state directory: the staged bundles, the journal
#: (``deploy.json``) and the transfer in progress (``incoming/``).
BUNDLES_DIR: Final = "bundles"
#: What :class:`~edge_agent.fleet.deploy.DeployManager` counts (the status file's and the
#: metrics' ``deploy``): here, so that a node that never deployed reports them, zero, without
#: the manager (built when a deployment needs it: daemon/ab_switch.py).
DEPLOY_COUNTERS: Final = (
    "started",
    "resumed",
    "chunks",
    "chunk_bytes",
    "chunks_rejected",
    "chunks_duplicate",
    "chunks_broadcast",
    "chunks_ignored",
    "done",
    "failed",
    "rolled_back",
    "discarded",
)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """``data`` as JSON, crash-safely: ``path`` is old or new after a crash."""
    write_atomic(path, json.dumps(data, sort_keys=True).encode(), mkdir=True)


def read_json(path: Path) -> Any:
    """The JSON document at ``path``; None when there is no such file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


class OverlayEntry(Record):
    """One deployed bundle: what a group runs instead of its configured model."""

    path: Annotated[str, Rule(description="the staged bundle file")]
    sha256: Annotated[str, Rule(pattern=r"^[0-9a-f]{64}$", description="bundle identity")]
    name: str = ""
    version: str = ""
    config_model: Annotated[
        str, Rule(description="the config's model of the group when deployed (JSON)")
    ]
    deployed_at: float = 0.0


class _OverlayFile(Record):
    version: int = 1
    groups: dict[str, OverlayEntry] = field(default_factory=dict)


def read_overlay(state_dir: Path) -> dict[str, OverlayEntry]:
    """The deployed bundles by group as a reader beside the daemon sees them, read only: empty
    when there is no overlay, or one the daemon would find damaged (it runs the config's models
    then; :meth:`Overlay.load` moves such a file aside, this leaves it)."""
    try:
        raw = read_json(Path(state_dir) / OVERLAY_FILE)
        return dict(from_json(_OverlayFile, raw).groups) if raw is not None else {}
    except (OSError, ValueError):
        return {}


class Overlay:
    """``state_dir/deployed.json``: group -> :class:`OverlayEntry` (see the module docstring)."""

    def __init__(self, state_dir: Path, *, faults: StateFaults | None = None) -> None:
        self.path = Path(state_dir) / OVERLAY_FILE
        self.entries: dict[str, OverlayEntry] = {}
        self.load_error = ""
        self.faults = faults if faults is not None else StateFaults()
        #: True when :meth:`load` found the file damaged and moved it aside.
        self.recovered = False

    def load(self) -> None:
        """Read the overlay; a damaged one is moved aside (the config's models run)."""
        self.load_error = ""
        self.recovered = False
        data = _OverlayFile()
        reason = "not a regular file" if not_a_file(self.path) else ""
        if not reason:
            try:
                raw = read_json(self.path)
                data = from_json(_OverlayFile, raw) if raw is not None else _OverlayFile()
            except OSError as err:
                self.load_error = f"{self.path}: unreadable, deployed bundles are ignored: {err}"
                self.faults.storage_error("overlay", err, f"read {self.path}")
            except ValueError as err:
                reason = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
        if reason:
            self.load_error = f"{self.path}: damaged, deployed bundles are ignored: {reason}"
            self.recovered = True
            self.faults.move_aside("overlay", self.path, f"{reason}; the config's models run")
        self.load_error = self.load_error[:512]
        self.entries = dict(data.groups)

    def save(self) -> None:
        doc = _OverlayFile(groups=self.entries)
        write_json_atomic(self.path, dataclasses.asdict(doc))

    def get(self, group: str) -> OverlayEntry | None:
        return self.entries.get(group)

    def restore(self, group: str, entry: OverlayEntry | None) -> None:
        """Make ``group``'s entry ``entry`` (None removes it) and save."""
        if entry is None:
            if group not in self.entries:
                return
            del self.entries[group]
        else:
            self.entries[group] = entry
        self.save()

    def referenced(self) -> set[str]:
        return {Path(e.path).name for e in self.entries.values()}
