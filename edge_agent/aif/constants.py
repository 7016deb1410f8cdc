"""pymdp's numeric constants, which the float oracle (:mod:`edge_agent.aif.reference`) and the
batched kernels (:mod:`edge_agent.aif.kernels`) share: the kernels take them from here, so a
daemon does not hold the oracle's code (docs/memory.md)."""

from __future__ import annotations

import numpy as np

#: Added inside every log (pymdp's ``spm_log_single``).
EPS = 1e-16
#: spm_MDP_G: states below this probability are left out, and it is added inside log(p(o|s)).
EXP_M16 = float(np.exp(-16.0))
