"""gwlite: Gromov-Wasserstein distances you can trust.

Every result says what it provably is: ``lower <= GW <= upper``, with ``certified``
true only when the value is proven to be the GW optimum.
"""

from gwlite.api import METHODS, gromov_wasserstein
from gwlite.bounds import LOWER_BOUNDS, lower_bound, sorted_coupling, sorted_upper_bound
from gwlite.coupling import gw_cost
from gwlite.errors import GWInputError, GWSolverError
from gwlite.graphs import from_networkx
from gwlite.pairs import Neighbours, PairwiseResult, pairwise
from gwlite.pointcloud import PointCloud
from gwlite.psd import permutation_certificate, rank_one_bounds
from gwlite.result import GWResult
from gwlite.univariate import wasserstein_1d

__version__ = "0.1.0"

__all__ = [
    "GWInputError",
    "GWResult",
    "GWSolverError",
    "LOWER_BOUNDS",
    "METHODS",
    "Neighbours",
    "PairwiseResult",
    "PointCloud",
    "from_networkx",
    "gromov_wasserstein",
    "gw_cost",
    "lower_bound",
    "pairwise",
    "permutation_certificate",
    "rank_one_bounds",
    "sorted_coupling",
    "sorted_upper_bound",
    "wasserstein_1d",
]
