"""Perception for Active Inference: a neural observation model in front of an agent group.

A bundle of kind ``aif+perception`` pairs a generative model (``A``, ``B``, ``C``, ``D`` in
``logu8-v1``) with a neural model whose ``output_kind`` is ``observation``. The neural model turns
each agent's raw sensor window into one tensor of **logits per observation modality**: output
``m`` is ``(batch, O_m)``, in the order of the generative model's modalities. (Outputs are logits,
not probabilities: int8 keeps small probabilities badly, logits well.)

:class:`PerceptionAifGroup` runs both as one batch per tick:

* ``evidence="hard"``: the observation of modality ``m`` is ``argmax`` of its logits, and the
  agents get ``(N, M)`` integer outcomes, exactly as from any other source;
* ``evidence="soft"``: the agents get ``softmax(logits)``, a distribution over outcomes per
  modality (``M`` arrays ``(N, O_m)``), and weigh the likelihood with it,
  ``L(s) = sum_o p(o) A[o, s]``, so an unsure classifier moves beliefs less.

The perception model may cover only the **first** ``P`` modalities: the others are observed as
ever, and :meth:`PerceptionAifGroup.step` takes their outcomes as ``rest`` ``(N, M - P)`` (the
daemon's sensor world reports the reward of the last guess that way). Any classifier works as
perception: a model of ``output_kind`` ``observation``, or a ``discrete`` policy's logits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from edge_agent.aif.quant import SCHEME, QuantizedModel
from edge_agent.aif.settings import AifSettings, settings_from_json
from edge_agent.core.agents import AifAgentGroup, Precision
from edge_agent.core.budget import MemoryBudget
from edge_agent.core.contract import GroupEvent, GroupIO, state_under
from edge_agent.core.health_window import HealthSummary
from edge_agent.errors import BundleError, InputError, ModelError
from edge_agent.neural.agents import NeuralAgentGroup

if TYPE_CHECKING:
    from edge_agent.bundle.loader import Bundle

logger = logging.getLogger(__name__)

__all__ = ["Evidence", "PerceptionAifGroup"]

Evidence = Literal["hard", "soft"]


class PerceptionAifGroup:
    """Raw sensor vectors -> observation model -> Active Inference agents, one batch per tick.

    ``perception`` is a :class:`NeuralAgentGroup` with ``output_kind = "observation"``; ``aif`` is
    the agents' :class:`AifAgentGroup`. Both must have the same number of agents.
    """

    def __init__(
        self,
        perception: NeuralAgentGroup,
        aif: AifAgentGroup,
        *,
        evidence: Evidence = "hard",
    ) -> None:
        if perception.spec.output_kind == "continuous":
            raise ModelError(
                "the perception model's output_kind is 'continuous': perception needs logits "
                "per outcome ('observation' or 'discrete')"
            )
        if evidence not in ("hard", "soft"):
            raise InputError(f"evidence must be 'hard' or 'soft', got {evidence!r}")
        if perception.n_agents != aif.n_agents:
            raise InputError(
                f"the perception model runs {perception.n_agents} agents, the Active Inference "
                f"group {aif.n_agents}"
            )
        num_obs = aif.cm.num_obs
        outputs = perception.spec.outputs
        if perception.spec.output_kind == "discrete":
            outputs = outputs[:1]  # a policy's first output: its logits
        if len(outputs) > len(num_obs):
            raise ModelError(
                f"the observation model has {len(outputs)} outputs, the generative model "
                f"{len(num_obs)} modalities: output m must give the logits of modality m"
            )
        for m, (tensor, outcomes) in enumerate(zip(outputs, num_obs[: len(outputs)], strict=True)):
            if tuple(tensor.shape[1:]) != (outcomes,):
                raise ModelError(
                    f"output {m} {tensor.name!r} has shape {list(tensor.shape)}, modality {m} "
                    f"has {outcomes} outcomes: expected [-1, {outcomes}]"
                )
        self.perception = perception
        self.aif = aif
        self.evidence: Evidence = evidence
        self.outputs = tuple(outputs)
        #: Modalities the perception model observes (the first ``P``); the rest come as ``rest``.
        self.perceived = len(outputs)
        self.key = f"{perception.key}+{aif.key}"
        self.precision = aif.precision
        self._allocate(aif.n_agents)

    def _allocate(self, n_agents: int) -> None:
        num_obs = self.aif.cm.num_obs
        self._obs = np.zeros((n_agents, len(num_obs)), dtype=np.int64)
        self._index = np.zeros(n_agents, dtype=np.int64)
        self._soft = [np.zeros((n_agents, size), dtype=self.aif.dtype) for size in num_obs]
        self._row = np.zeros(n_agents, dtype=self.aif.dtype)
        # One-hot evidence of the modalities given as ``rest``, without allocating per tick.
        self._outcomes = [np.arange(size) for size in num_obs]
        self._hits = [np.zeros((n_agents, size), dtype=bool) for size in num_obs]

    @property
    def n_agents(self) -> int:
        return self.aif.n_agents

    # The Active Inference group's state is the group's (status, snapshots, health).
    @property
    def cm(self) -> Any:
        return self.aif.cm

    @property
    def qs(self) -> list[np.ndarray]:
        return self.aif.qs

    @property
    def q_pi(self) -> np.ndarray:
        return self.aif.q_pi

    @property
    def action(self) -> np.ndarray:
        return self.aif.action

    @property
    def history_capacity(self) -> int:
        return self.aif.history_capacity

    @property
    def shared_nbytes(self) -> int:
        return self.perception.shared_nbytes + self.aif.shared_nbytes

    def resize_history(self, capacity: int) -> None:
        """Shrink the Active Inference agents' history (the sensor window is the model's)."""
        self.aif.resize_history(capacity)

    def per_agent_nbytes(self) -> int:
        """Bytes per agent: both groups' and the observation buffers."""
        own = 8 * (len(self.aif.cm.num_obs) + 1) + self.aif.dtype.itemsize * (
            sum(self.aif.cm.num_obs) + 1
        )
        return self.perception.per_agent_nbytes() + self.aif.per_agent_nbytes() + own

    # -- ticking -----------------------------------------------------------------------------------
    def perceive(
        self, raw: np.ndarray, rest: np.ndarray | None = None
    ) -> np.ndarray | list[np.ndarray]:
        """Run the observation model on ``raw`` ``(N, F)`` sensor vectors.

        Returns ``(N, M)`` int64 outcomes (hard evidence) or ``M`` arrays ``(N, O_m)`` of outcome
        probabilities (soft evidence): buffers reused on the next call. ``rest``: ``(N, M - P)``
        outcomes of the modalities the model does not perceive (one-hot in soft evidence).
        """
        num_obs = self.aif.cm.num_obs
        if self.perceived < len(num_obs):
            if rest is None:
                raise InputError(
                    f"the perception model observes {self.perceived} of {len(num_obs)} "
                    "modalities: pass the others' outcomes as rest"
                )
            r = np.asarray(rest)
            if r.shape != (self.n_agents, len(num_obs) - self.perceived):
                raise InputError(
                    f"rest has shape {r.shape}, expected "
                    f"({self.n_agents}, {len(num_obs) - self.perceived})"
                )
            for j, m in enumerate(range(self.perceived, len(num_obs))):
                if self.evidence == "hard":
                    self._obs[:, m] = r[:, j]
                else:
                    hit = self._hits[m]
                    np.equal(r[:, j, None], self._outcomes[m], out=hit)
                    np.copyto(self._soft[m], hit)
        outputs = self.perception.forward(raw)
        for m, tensor in enumerate(self.outputs):
            logits = outputs[tensor.name]
            if self.evidence == "hard":
                np.argmax(logits, axis=1, out=self._index)
                self._obs[:, m] = self._index
            else:
                probs, row = self._soft[m], self._row
                np.copyto(probs, logits, casting="same_kind")
                np.max(probs, axis=1, out=row)
                np.subtract(probs, row[:, None], out=probs)
                np.exp(probs, out=probs)
                np.sum(probs, axis=1, out=row)
                np.divide(probs, row[:, None], out=probs)
        return self._obs if self.evidence == "hard" else self._soft

    def step(
        self, raw: np.ndarray, now: float | None = None, rest: np.ndarray | None = None
    ) -> np.ndarray:
        """One tick: perceive ``raw`` ``(N, F)`` (and ``rest``, see :meth:`perceive`), then
        infer, plan and act; actions ``(N, F_f)``."""
        evidence = self.perceive(raw, rest)
        if isinstance(evidence, np.ndarray):
            return self.aif.step(evidence, now)
        # Soft evidence: AifAgentGroup.step takes one (N, O_m) distribution per modality.
        soft: Any = evidence
        return self.aif.step(soft, now)

    def reset(self, mask: np.ndarray | None = None) -> None:
        """New trial for the agents in ``mask``: empty sensor windows, beliefs back to ``D``."""
        self.perception.reset(mask)
        self.aif.reset(mask)

    def resize(self, n_agents: int) -> None:
        """Grow or shrink both groups (each reserves before allocating)."""
        self.perception.resize(n_agents)
        self.aif.resize(n_agents)
        self._allocate(n_agents)

    def release(self) -> None:
        self.perception.release()
        self.aif.release()

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {f"perception.{k}": v for k, v in self.perception.state_dict().items()}
        out.update({f"aif.{k}": v for k, v in self.aif.state_dict().items()})
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        # read as ``state`` reads: a snapshot's arrays straight into the groups' own
        self.perception.load_state_dict(state_under(state, "perception."))
        self.aif.load_state_dict(state_under(state, "aif."))

    # -- the group contract (edge_agent.core.contract.AgentGroup) ----------------------------------
    def advance(
        self, obs: np.ndarray, now: float | None, outcomes: np.ndarray | None,
        starts: np.ndarray | None = None,
    ) -> np.ndarray:
        """One tick's step: the modalities perception does not cover come from ``outcomes``;
        the agents of ``starts`` reset first."""
        if starts is not None:
            self.reset(starts)
        rest = outcomes if self.perceived < self.aif.cm.num_modalities else None
        return self.step(obs, now, rest)

    def io(self) -> GroupIO:
        net = self.perception
        return GroupIO(
            num_obs=tuple(self.aif.cm.num_obs),
            features=net.num_features,
            frame=net.frame,
            actions=tuple(self.aif.cm.num_controls),
        )

    def io_signature(self) -> tuple[object, ...]:
        cm = self.aif.cm
        return ("perception", self.perception.num_features, cm.num_obs, cm.num_controls)

    def warm_up(self, obs: np.ndarray) -> None:
        """Step once on ``obs`` (zeros for the modalities not perceived), then put it back."""
        state = {k: np.array(v, copy=True) for k, v in self.state_dict().items()}
        num_rest = self.aif.cm.num_modalities - self.perceived
        rest = np.zeros((self.n_agents, num_rest), dtype=np.int64) if num_rest else None
        self.step(obs, None, rest)
        self.load_state_dict(state)

    def finite(self) -> bool:
        return self.aif.finite()

    def random_inputs(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        n = self.n_agents
        raw = rng.standard_normal((n, self.perception.num_features), dtype=np.float32)
        rest_sizes = self.aif.cm.num_obs[self.perceived :]
        if not rest_sizes:
            return raw, None
        return raw, np.stack([rng.integers(0, o, size=n) for o in rest_sizes], axis=1)

    def describe(self) -> dict[str, Any]:
        return {
            "workers": 1,
            "workers_rss_bytes": 0,
            "workers_restarts": 0,
            **self.perception.range_watch.describe(),
        }

    def metrics(self) -> dict[str, object]:
        """The classifier's observations outside its calibrated range."""
        return self.perception.metrics()

    def alerts(self) -> list[GroupEvent]:
        """The classifier's ``input_out_of_range`` event (see :class:`NeuralAgentGroup`) and the
        Active Inference agents' ``drift``."""
        return [*self.perception.alerts(), *self.aif.alerts()]

    def health_summary(self) -> HealthSummary | None:
        """The Active Inference agents' health measures (docs/health.md; those that need
        outcome indices only with ``evidence = "hard"``) and the classifier's out-of-range
        share."""
        aif = self.aif.health_summary()
        seen = self.perception.health_summary()
        if aif is None:
            return seen
        return HealthSummary(aif.agent_steps, {**aif.measures, **seen.measures}, aif.drift)

    # -- bundles -----------------------------------------------------------------------------------
    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        n_agents: int,
        *,
        threads: int = 1,
        evidence: Evidence = "hard",
        precision: Precision = "int8",
        settings: AifSettings | None = None,
        seed: int | None = 0,
        history_capacity: int = 0,
        budget: MemoryBudget | None = None,
        name: str = "perception",
    ) -> PerceptionAifGroup:
        """Both models of a verified ``aif+perception`` bundle (``settings`` override its own)."""
        manifest = bundle.manifest
        if manifest.kind != "aif+perception" or manifest.aif is None or manifest.neural is None:
            raise BundleError(
                f"{bundle.path}: perception needs a bundle of kind 'aif+perception', "
                f"got {manifest.kind!r}"
            )
        if manifest.aif.quant_scheme != SCHEME:
            raise BundleError(
                f"{bundle.path}: unknown quantization scheme {manifest.aif.quant_scheme!r}"
            )
        try:
            agent_settings = settings or settings_from_json(manifest.aif.settings)
        except ValueError as err:
            raise BundleError(f"{bundle.path}: invalid agent settings: {err}") from err
        model = QuantizedModel.from_arrays(bundle.aif_arrays())
        perception = NeuralAgentGroup(
            manifest.neural,
            bundle.file_bytes(manifest.neural.model_file),
            n_agents,
            threads=threads,
            seed=seed,
            budget=budget,
            name=f"{name}.perception",
        )
        try:
            aif = AifAgentGroup(
                model,
                n_agents,
                settings=agent_settings,
                precision=precision,
                seed=seed,
                history_capacity=history_capacity,
                budget=budget,
                name=name,
            )
        except BaseException:
            perception.release()
            raise
        logger.info(
            "group %s: perception bundle %s %s (%s evidence, %s agents)",
            name,
            manifest.name,
            manifest.version,
            evidence,
            precision,
        )
        return cls(perception, aif, evidence=evidence)
