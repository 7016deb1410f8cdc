"""The policy tree: policies that share an action prefix share the predicted states of that prefix.

Part of :mod:`edge_agent.aif.kernels`. Expected free energy is evaluated on a policy *tree*:
policies sharing a prefix share the predicted states of that prefix, and each factor is propagated
separately (mean field). :func:`build_policy_tree` builds it once per model, at compile time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_agent.aif.kernels.array_types import IntArray
from edge_agent.arrays import distinct


# --------------------------------------------------------------------------------------------
# the policy tree
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Depth:
    """One depth of the policy tree.

    Per factor ``f``: nodes are the distinct action prefixes of that factor; ``parent[f]`` indexes
    the previous depth's nodes of ``f``, ``by_action[f]`` lists ``(u, node indices)``.
    Joint nodes combine one node per factor; ``joint[:, f]`` says which; ``policy_joint[p]`` is
    the joint node policy ``p`` passes through at this depth.
    """

    parent: tuple[IntArray, ...]
    by_action: tuple[tuple[tuple[int, IntArray], ...], ...]
    joint: IntArray  # (J, F)
    policy_joint: IntArray  # (P,)
    joint_is_identity: bool


@dataclass(frozen=True, eq=False)
class PolicyTree:
    policies: IntArray  # (P, L, F)
    depths: tuple[Depth, ...]
    #: ``first_action_onehot[f]`` (P, U_f): which first action each policy takes on factor f.
    first_action_onehot: tuple[np.ndarray, ...]
    #: ``root_node_of_action[f][u]``: depth-0 node of factor f reached by action u, or -1.
    root_node_of_action: tuple[IntArray, ...]

    @property
    def nbytes(self) -> int:
        total = self.policies.nbytes + sum(x.nbytes for x in self.first_action_onehot)
        for d in self.depths:
            total += d.joint.nbytes + d.policy_joint.nbytes + sum(p.nbytes for p in d.parent)
        return int(total)


def build_policy_tree(
    policies: np.ndarray, num_controls: tuple[int, ...], dtype: type[np.floating]
) -> PolicyTree:
    P, L, F = policies.shape
    depths = []
    prev_node = [np.zeros(P, dtype=np.int64) for _ in range(F)]  # root
    for t in range(L):
        parents, by_action, node_of_policy = [], [], []
        for f in range(F):
            keys = np.stack([prev_node[f], policies[:, t, f]], axis=1)
            uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
            parents.append(uniq[:, 0].astype(np.int64))
            actions = uniq[:, 1]
            by_action.append(
                tuple(
                    (int(u), np.flatnonzero(actions == u).astype(np.int64))
                    for u in distinct(actions)
                )
            )
            node_of_policy.append(inverse.ravel().astype(np.int64))
        stacked = np.stack(node_of_policy, axis=1)
        joint, policy_joint = np.unique(stacked, axis=0, return_inverse=True)
        identity = F == 1 and np.array_equal(joint[:, 0], np.arange(len(joint)))
        depths.append(
            Depth(
                parent=tuple(parents),
                by_action=tuple(by_action),
                joint=joint.astype(np.int64),
                policy_joint=policy_joint.ravel().astype(np.int64),
                joint_is_identity=bool(identity),
            )
        )
        prev_node = node_of_policy
    onehot = []
    for f, u in enumerate(num_controls):
        m = np.zeros((P, u), dtype=dtype)
        m[np.arange(P), policies[:, 0, f]] = 1.0
        onehot.append(m)
    root_nodes = []
    for f, u in enumerate(num_controls):
        lookup = np.full(u, -1, dtype=np.int64)
        for action, nodes in depths[0].by_action[f]:
            lookup[action] = nodes[0]
        root_nodes.append(lookup)
    return PolicyTree(
        policies=policies.astype(np.int64),
        depths=tuple(depths),
        first_action_onehot=tuple(onehot),
        root_node_of_action=tuple(root_nodes),
    )
