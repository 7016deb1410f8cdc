"""Kinds of agent group, looked up by name and imported only when a group runs one.

============== =================================== ===============================================
``aif``        :mod:`edge_agent.kinds.aif`         Active Inference: a built-in model or an
                                                   ``aif`` bundle
``neural``     :mod:`edge_agent.kinds.neural`      a neural policy: a ``neural`` bundle
``perception`` :mod:`edge_agent.kinds.perception`  a neural classifier in front of Active
                                                   Inference: an ``aif+perception`` bundle, or a
                                                   group's ``perception`` table
============== =================================== ===============================================

A kind module defines ``KIND``, a :class:`~edge_agent.kinds.base.GroupKind`: how a group of
that kind loads its model (from a verified bundle), checks it against its source's world, plans
its memory and builds its agents (an :class:`~edge_agent.core.contract.AgentGroup`). A group's
kind follows from its model (:func:`kind_name`); a ``model = { type = "kind", module = ... }``
names a kind of one's own by its module (as gunicorn's ``worker_class`` does). Importing this
package imports no kind: a daemon without neural groups never loads ``edge_agent.neural``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from edge_agent.config.daemon import BundleModel, GroupConfig, KindModel
from edge_agent.config.group_tables import hook
from edge_agent.errors import BundleError, ConfigError

if TYPE_CHECKING:
    from edge_agent.kinds.base import GroupKind

__all__ = ["KINDS", "get_kind", "kind_name"]

KINDS: dict[str, str] = {
    "aif": "edge_agent.kinds.aif",
    "neural": "edge_agent.kinds.neural",
    "perception": "edge_agent.kinds.perception",
}
"""Kind name -> its module (which defines ``KIND``)."""

_BUNDLE_KINDS = {"aif": "aif", "neural": "neural", "aif+perception": "perception"}


def kind_name(cfg: GroupConfig, manifest_kind: str | None = None) -> str:
    """The kind of group ``cfg`` (``manifest_kind``: its model bundle's, when it has one; a
    table of the group's may choose another, :func:`~edge_agent.config.group_tables.hook`
    ``kind_for``: an Active Inference model with a ``perception`` table runs as ``perception``)."""
    if isinstance(cfg.model, KindModel):
        return cfg.model.module
    if isinstance(cfg.model, BundleModel):
        name = _BUNDLE_KINDS.get(manifest_kind or "")
        if name is None:
            raise BundleError(
                f"{cfg.model.path}: bundle kind {manifest_kind!r} cannot run in a group"
            )
    else:
        name = "aif"
    for _key, table in cfg.tables:  # a table of a kind may select it (perception)
        kind_for = hook(table, "kind_for")
        if kind_for is not None and (chosen := kind_for(name)) is not None:
            return str(chosen)
    return name


def get_kind(name: str) -> GroupKind:
    """The kind ``name`` (a name of :data:`KINDS` or a module's dotted path), imported now."""
    module_name = KINDS.get(name, name)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"kind {name!r}: module {module_name!r} cannot be imported: {err}", path=None
        ) from err
    kind: GroupKind | None = getattr(module, "KIND", None)
    if kind is None:
        raise ConfigError(f"kind {name!r}: module {module_name!r} defines no KIND", path=None)
    return kind
