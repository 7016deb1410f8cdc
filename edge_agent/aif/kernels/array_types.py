"""Array type aliases shared by the modules of :mod:`edge_agent.aif.kernels`."""

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]
IndexArray = NDArray[np.intp]
