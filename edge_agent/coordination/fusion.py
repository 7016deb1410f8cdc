"""Belief fusion: pure batched kernels for sharing posteriors over shared state factors.

What travels is a **likelihood message**, not a posterior: for an agent and a shared factor ``f``

    lambda(s) = ln q(s) - ln prior(s)

where ``prior`` is exactly the prior the agent's inference used, *after* it had fused its peers'
messages. For a single-factor model this is ``ln p(o | s)`` up to a constant; in mean-field
multi-factor inference it is the factor's variational message ``E_q(other factors)[ln p(o | s)]``
up to a constant. Either way it contains the agent's own new evidence and nothing it received, so
a receiver that adds it to its own prior counts every piece of evidence once (the full argument is
in ``docs/coordination.md``). A sender accumulates its messages between publications (a sum of
log-likelihoods) and sends the sum.

A receiver fuses a tempered product of experts into the prior of its next inference:

    ln prior'(s) = ln prior(s) + sum_p w_p * clip(Lambda_p(s) - max_s Lambda_p(s), -bound, 0)

where ``Lambda_p`` is the sum of peer ``p``'s messages that arrived since the last fusion, each
multiplied by ``exp(-age / tau)`` (messages older than ``max_age`` are dropped before that).
Shifting by the maximum does not change the posterior (a constant in ``s``); clipping at
``-bound`` means that one peer moves any log-odds ``ln prior(a) - ln prior(b)`` by at most
``w_p * bound`` nats per fusion, however extreme or frequent its messages.

Wire code (``ea-llr8``): ``Lambda - max Lambda`` lies in ``[-R, 0]`` after clipping at
``R = WIRE_RANGE_NATS``; it is sent as ``uint8`` ``code = round(-x * 255 / R)``, so the absolute
error is at most ``R / 510`` nats (0.031 for ``R = 16``) on every entry. A log-domain linear code
fits because messages are *added* in the log domain: a bounded absolute error in nats is a
bounded relative error on the likelihood. The probability codes of :mod:`edge_agent.aif.quant` do
not fit: ``encode_beliefs_u8`` is linear in probability (every likelihood ratio beyond 255 becomes
an impossible state) and ``logu8-v1`` keeps two float32 per column, more than the codes themselves
for the small factors shared in practice.

Every function takes ``(n_agents, S)`` (or ``(n_peers, n_agents, S)``) arrays and, where it
matters, the output and scratch buffers, so a tick allocates nothing.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif.constants import EPS

WIRE_RANGE_NATS: Final = 16.0
"""Range of an encoded message in nats: ``Lambda - max Lambda`` is clipped to ``[-R, 0]``."""
CODE_MAX: Final = 255

FloatArray = NDArray[np.floating]


def accumulate_message(
    q: FloatArray, prior: FloatArray, acc: FloatArray, scratch: FloatArray
) -> None:
    """``acc += ln(q + eps) - ln(prior + eps)`` without temporaries (``scratch`` like ``acc``)."""
    np.add(q, EPS, out=scratch)
    np.log(scratch, out=scratch)
    np.add(acc, scratch, out=acc)
    np.add(prior, EPS, out=scratch)
    np.log(scratch, out=scratch)
    np.subtract(acc, scratch, out=acc)


def center(x: FloatArray, col: FloatArray) -> FloatArray:
    """In place: ``x -= max(x, axis=-1)``; ``col`` is ``x.shape[:-1] + (1,)`` scratch."""
    np.max(x, axis=-1, keepdims=True, out=col)
    np.subtract(x, col, out=x)
    return x


def evidence_strength(x: FloatArray, out: FloatArray, col: FloatArray) -> FloatArray:
    """``out = max(x) - min(x)`` per row of ``x (N, S)``: the largest log-odds shift it carries.

    ``col`` is ``(N, 1)`` scratch; ``out`` is ``(N,)``.
    """
    np.max(x, axis=-1, keepdims=True, out=col)
    np.copyto(out, col[:, 0])
    np.min(x, axis=-1, keepdims=True, out=col)
    np.subtract(out, col[:, 0], out=out)
    return out


def encode_message(
    x: FloatArray,
    out: NDArray[np.uint8],
    scratch: FloatArray,
    col: FloatArray,
    *,
    wire_range: float = WIRE_RANGE_NATS,
) -> NDArray[np.uint8]:
    """``uint8`` codes of messages ``x (N, S)``: ``round(min(max x - x, R) * 255 / R)``.

    ``scratch`` is a float ``(N, S)`` buffer, ``col`` ``(N, 1)``; ``x`` is not modified.
    """
    np.max(x, axis=-1, keepdims=True, out=col)
    np.subtract(col, x, out=scratch)
    np.minimum(scratch, wire_range, out=scratch)
    np.multiply(scratch, CODE_MAX / wire_range, out=scratch)
    np.add(scratch, 0.5, out=scratch)
    np.copyto(out, scratch, casting="unsafe")  # truncation of y + 0.5 rounds for y >= 0
    return out


def decode_message(
    codes: NDArray[np.uint8], out: FloatArray, *, wire_range: float = WIRE_RANGE_NATS
) -> FloatArray:
    """Messages back from :func:`encode_message`: ``-code * R / 255``, in ``[-R, 0]``."""
    np.multiply(codes, -wire_range / CODE_MAX, out=out, casting="unsafe")
    return out


def age_weight(age_s: float, tau_s: float, max_age_s: float) -> float:
    """``exp(-age / tau)`` for a message ``age_s`` old; 0 beyond ``max_age_s``."""
    if not age_s <= max_age_s:  # also catches NaN
        return 0.0
    return math.exp(-max(0.0, age_s) / tau_s)


def fused_evidence(
    pending: FloatArray,
    has: NDArray[np.bool_],
    weights: FloatArray,
    bound: float,
    *,
    out: FloatArray,
    scratch: FloatArray,
    col: FloatArray,
) -> FloatArray:
    """The evidence term of the fusion rule, summed over peers, into ``out (N, S)``.

    ``pending (P, N, S)``: per peer slot, the age-weighted sum of the messages received since the
    last fusion; ``has (P, N)``: which rows received one; ``weights (P,)``: trust per peer.
    Per peer and agent: shift to a maximum of 0, clip at ``-bound``, multiply by the trust.
    ``scratch`` is ``(N, S)`` and ``col`` ``(N, 1)``, both float. Loops over peers only.
    """
    out.fill(0)
    for p in range(pending.shape[0]):
        rows = has[p]
        if not rows.any():
            continue
        np.copyto(scratch, pending[p])
        center(scratch, col)
        np.maximum(scratch, -bound, out=scratch)
        np.multiply(scratch, rows[:, None], out=scratch)
        np.multiply(scratch, weights[p], out=scratch)
        np.add(out, scratch, out=out)
    return out


def fuse_prior(
    prior: FloatArray,
    evidence: FloatArray,
    rows: NDArray[np.bool_],
    scratch: FloatArray,
    col: FloatArray,
) -> FloatArray:
    """In place for the agents in ``rows``: ``prior = softmax(ln(prior + eps) + evidence)``.

    ``prior``, ``evidence`` and ``scratch`` are ``(N, S)``, ``rows`` ``(N,)``, ``col`` ``(N, 1)``.
    Agents outside ``rows`` keep their prior bit for bit.
    """
    np.add(prior, EPS, out=scratch)
    np.log(scratch, out=scratch)
    np.add(scratch, evidence, out=scratch)
    center(scratch, col)
    np.exp(scratch, out=scratch)
    np.sum(scratch, axis=-1, keepdims=True, out=col)
    np.divide(scratch, col, out=scratch)
    np.copyto(prior, scratch, where=rows[:, None])
    return prior
