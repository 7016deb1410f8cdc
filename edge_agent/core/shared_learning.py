"""Learning scope ``shared``: one set of counts for the whole group, and one model they refresh.

:class:`SharedTables` holds the model a shared learning group's agents infer with as its counts
refresh it: the float tables, for ``int8`` groups the group's own codes of the learned tables
(the model it was given, and its cached compilation, may be shared with other groups), and what
it was loaded with. A refresh (:mod:`edge_agent.aif.learning_refresh`) brings only the touched
columns of ``A`` into the compiled tables when nothing else moved since the last one (past the
first such refresh, into the group's own compiled tables, in place, the modalities that did not
move read from the codes decoded once: its cost follows what moved), and builds and compiles the
model again otherwise; the group installs the compiled tables it returns. It builds the compiled
pass that steps the learning ticks of a float64 group where it can (:meth:`SharedTables.
build_pass`, :mod:`edge_agent.core.native_pass`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edge_agent.aif import kernels
from edge_agent.aif.learning import Learner
from edge_agent.aif.learning_refresh import (
    Codes,
    codes_nbytes,
    decoded_likelihoods,
    learned_codes,
    refresh_model,
    refresh_touched_likelihood,
    refresh_touched_transitions,
)
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.quant import QuantizedModel
from edge_agent.core.group_blocks import IntArray

if TYPE_CHECKING:
    from edge_agent.aif.learning import LearningSpec
    from edge_agent.aif.settings import AifSettings
    from edge_agent.core.native_pass import SharedNativePass

__all__ = ["SharedTables"]


class SharedTables:
    """The tables of a shared learning group: ``model`` (float) and ``quantized`` (its int8
    codes; None for float64) as loaded, ``cm`` their compilation, ``dtype`` the compute dtype."""

    name = "shared"
    #: Shared counts learn under a planning policy (every agent after the inference pass).
    plans_by_policy = True

    def __init__(
        self,
        model: GenerativeModel,
        quantized: QuantizedModel | None,
        cm: kernels.CompiledModel,
        dtype: type[np.floating],
    ) -> None:
        self._model = model
        self._quantized = quantized
        self._dtype = dtype
        #: What the group was loaded with: :meth:`restore_loaded` goes back to it.
        self._loaded = (model, quantized, cm)
        self._codes: Codes | None = None
        #: The kinds (``"A"``, ``"B"``) whose learned tables' codes were encoded from their
        #: counts (whole) since they were copied from the loaded ones: a compiled pass marks the
        #: counts refreshed without encoding, so the first refresh after a copy that finds a
        #: kind learned encodes it whole (each kind its own: ``pA`` may learn ticks before
        #: ``pB``, which learns from the first action on).
        self._codes_encoded: frozenset[str] = frozenset()
        #: The counts' versions at the last refresh (None: the next refresh is a full one).
        self._versions: dict[str, int] | None = None
        #: Every modality's codes decoded (int8, past the first incremental refresh: only the
        #: columns a refresh encodes are decoded again) and the compiled tables the last
        #: incremental refresh made, the group's own (the next one writes into them): None
        #: when a refresh must start again from the codes and copy the tables it changes.
        self._decoded: list[np.ndarray] | None = None
        self._own_cm: kernels.CompiledModel | None = None
        #: The model whose ``A`` the surprise last stacked, the stacked rows and each
        #: modality's first row (:meth:`outcome_probabilities`).
        self._stacked_A: tuple[GenerativeModel, np.ndarray, np.ndarray] | None = None
        #: The compiled pass that steps the learning ticks (:meth:`build_pass`), or None and
        #: why not.
        self.native: SharedNativePass | None = None
        self.native_reason = "not tried"

    def build_pass(
        self, learner: Learner, spec: LearningSpec, *, cm: kernels.CompiledModel,
        settings: AifSettings, n_agents: int,
    ) -> None:
        """The compiled pass over this model (:attr:`native`), or why the agents step with
        numpy (:attr:`native_reason`: :func:`~edge_agent.core.native_pass.shared_pass`)."""
        from edge_agent.core.native_pass import shared_pass  # noqa: PLC0415 - it learns

        found = shared_pass(self._model, quantized=self._quantized, learner=learner,
                            spec=spec, cm=cm, settings=settings, n_agents=n_agents,
                            codes=lambda: self._quantized,
                            surprise=self.outcome_probabilities)
        if isinstance(found, str):
            self.native_reason = found
        else:
            self.native = found

    @property
    def model(self) -> GenerativeModel:
        """The float model the agents infer with now (the counts' expectation since the last
        refresh)."""
        return self._model

    @property
    def quantized(self) -> QuantizedModel | None:
        """Its int8 codes (the group's own learned tables' from their first refresh on)."""
        return self._quantized

    def stepping(self) -> None:
        """The group's shared kernels step the agents."""
        return

    @property
    def stepping_name(self) -> str:
        """``"native"`` (the learning ticks in one compiled pass), or ``"numpy: <why not>"``."""
        return "native" if self.native is not None else f"numpy: {self.native_reason}"

    def tick_pass(self) -> SharedNativePass | None:
        """The compiled pass that steps the learning ticks (:attr:`native`), if any."""
        return self.native

    def bytes_per_agent(self, learner: Learner) -> int:
        """Nothing per agent: one model for the group."""
        del learner
        return 0

    def codes_nbytes(self, learner: Learner) -> int:
        """The group's own int8 codes of the learned tables (0 for float64)."""
        return 0 if self._loaded[1] is None else codes_nbytes(learner.counts)

    def _own_codes(self, learner: Learner) -> Codes | None:
        """The int8 tables by kind, the learned ones (``learner``'s) the group's own (copied
        once)."""
        if self._quantized is None:
            return None
        if self._codes is None:
            self._codes = learned_codes(self._quantized, learner.counts)
            self._codes_encoded = frozenset()
        return self._codes

    def refresh(
        self, learner: Learner, cm: kernels.CompiledModel
    ) -> tuple[kernels.CompiledModel | None, bool, int]:
        """Past every learned table's first refresh, with ``D`` unmoved since the last one, only
        what moved since then is brought into the compiled tables, without a compile
        (:meth:`_refresh_touched`); nothing when nothing moved (the compiled tables stay).
        Otherwise (a table's first refresh, ``D`` changed, or a structure the compiled tables
        follow moved) the model is built again from the normalised counts (quantized again for
        ``int8``) and compiled (:func:`refresh_model`)."""
        codes = self._own_codes(learner)
        if self._tables_follow(learner):
            done = self._refresh_touched(learner, cm, codes)
            if done is not None:
                self._mark_refreshed(learner)
                return done
        self._forget_derived()
        refreshed = refresh_model(
            self._model, self._quantized, codes, learner.counts,
            policies=cm.tree.policies, dtype=self._dtype,
            whole={"A", "B"} - self._codes_encoded,
        )
        self._codes_encoded = self._codes_encoded | {
            counts.kind for counts in learner.counts if counts.learned and counts.kind != "D"}
        for counts in learner.counts:
            if counts.learned:
                counts.mark_refreshed()
        self._model, self._quantized = refreshed.model, refreshed.quantized
        self._versions = {counts.kind: counts.version for counts in learner.counts}
        return refreshed.cm, False, refreshed.columns_encoded

    def _refresh_touched(
        self, learner: Learner, cm: kernels.CompiledModel, codes: Codes | None
    ) -> tuple[kernels.CompiledModel | None, bool, int] | None:
        """The incremental refresh (:meth:`refresh`'s returns), or None when it does not apply
        (then compile). The columns of a learned ``B`` that moved since the last refresh
        (touched, and normalised to other values than the agents use) are brought into its
        table, encoded (``int8``) and its factor's transitions into the compiled tables with what
        they give (:func:`refresh_touched_transitions`, into new tables); then the columns of
        ``A`` touched since the last refresh are normalised, encoded and brought in
        (:func:`refresh_touched_likelihood`: into the tables the last such refresh made, in
        place; the other columns decoded once, at the first)."""
        pA, pB = learner.pA, learner.pB
        assert self._versions is not None  # (_tables_follow)
        own = cm is self._own_cm  # the likelihood's tables are the group's own: write in place
        start = cm
        encoded = 0
        if pB is not None and self._versions.get("B") != pB.version:
            refreshed = refresh_touched_transitions(cm, self._model, self._quantized, codes, pB)
            if refreshed is None:
                return None
            self._model, self._quantized, cm = refreshed.model, refreshed.quantized, refreshed.cm
            encoded += refreshed.columns_encoded
        touched_A = pA is not None and any(map(np.count_nonzero, pA.touched))
        if cm is start and not touched_A:
            return None, True, 0
        if touched_A:
            assert pA is not None
            if codes is not None and self._decoded is None:
                self._decoded = decoded_likelihoods(codes)
            refreshed = refresh_touched_likelihood(
                cm, self._model, self._quantized, codes, pA, decoded=self._decoded, in_place=own
            )
            if refreshed is None:
                return None
            self._model, self._quantized, cm = refreshed.model, refreshed.quantized, refreshed.cm
            encoded += refreshed.columns_encoded
            own = True  # (refresh_touched_likelihood copies what it writes unless in place)
        if own:
            self._own_cm = cm
        return cm, True, encoded

    def _mark_refreshed(self, learner: Learner) -> None:
        """The tables follow every learned count again (those that did not move are what
        they were)."""
        for counts in learner.counts:
            if counts.learned:
                counts.mark_refreshed()
        self._versions = {counts.kind: counts.version for counts in learner.counts}

    def _tables_follow(self, learner: Learner) -> bool:
        """Whether the incremental refresh may apply: every table learned so far follows its
        counts (past its first refresh; int8: its codes encoded from them since they were
        copied, kind by kind) and ``D`` did not move since the last refresh."""
        versions = self._versions
        if versions is None or (self._quantized is not None and any(
                counts.learned and counts.kind not in self._codes_encoded
                for counts in learner.counts if counts.kind != "D")):
            return False
        if any(counts.learned and not counts.refreshed for counts in learner.counts):
            return False
        pD = learner.pD
        return pD is None or versions.get("D") == pD.version

    def forget_versions(self) -> None:
        """The next refresh is a full one (counts from a snapshot may differ anywhere)."""
        self._versions = None
        self._forget_derived()

    def _forget_derived(self) -> None:
        """The codes are about to change whole (or the tables to be compiled again): the
        decoded likelihoods and the group's own compiled tables are made again from them."""
        self._decoded = None
        self._own_cm = None

    def restore_loaded(self) -> kernels.CompiledModel:
        """The model the group was loaded with, its int8 codes and its compilation, again (the
        codes are copied again at the next refresh)."""
        self._model, self._quantized, cm = self._loaded
        self._codes = None
        self._codes_encoded = frozenset()
        self._forget_derived()
        return cm

    def outcome_probabilities(
        self, obs: IntArray, rows: IntArray, joint: np.ndarray
    ) -> np.ndarray:
        """``(r, M)`` float64: ``p(o_m) = A_m[o_m] . joint`` under the ``A`` the agents infer
        with: every modality's rows of the float model stacked into one table (made again when
        the model changes, at a refresh), one gather and one product."""
        del rows  # one table for every agent
        model = self._model
        if self._stacked_A is None or self._stacked_A[0] is not model:
            tables = [a.reshape(a.shape[0], -1) for a in model.A]
            offsets = np.cumsum([0, *(t.shape[0] for t in tables[:-1])])
            stacked = np.concatenate(tables).astype(np.float64)
            self._stacked_A = (model, stacked, offsets)
        _, stacked, offsets = self._stacked_A
        picked = stacked[obs + offsets]  # (r, M, S)
        p_obs: np.ndarray = np.matmul(picked, joint[:, :, None])[:, :, 0]
        return p_obs
