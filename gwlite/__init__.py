"""gwlite: Gromov-Wasserstein distances you can trust.

Every result says what it provably is: ``lower <= GW <= upper``, with ``certified``
true only when the value is proven to be the GW optimum.
"""

from gwlite.api import METHODS, gromov_wasserstein
from gwlite.barycenters import BarycenterResult, barycenter
from gwlite.batch import gromov_wasserstein_batch
from gwlite.bounds import LOWER_BOUNDS, lower_bound, sorted_coupling, sorted_upper_bound
from gwlite.coupling import fgw_cost, gw_cost
from gwlite.errors import GWInputError, GWSolverError
from gwlite.fused import FUSED_METHODS, feature_cost, fused_gromov_wasserstein
from gwlite.graphs import from_networkx
from gwlite.pairs import Neighbours, PairwiseResult, pairwise
from gwlite.pointcloud import PointCloud
from gwlite.psd import permutation_certificate, rank_one_bounds
from gwlite.result import GWResult
from gwlite.univariate import wasserstein_1d

__version__ = "0.2.0"

__all__ = [
    "BarycenterResult",
    "FUSED_METHODS",
    "GWInputError",
    "GWResult",
    "GWSolverError",
    "LOWER_BOUNDS",
    "METHODS",
    "Neighbours",
    "PairwiseResult",
    "barycenter",
    "feature_cost",
    "fgw_cost",
    "PointCloud",
    "from_networkx",
    "fused_gromov_wasserstein",
    "gromov_wasserstein",
    "gromov_wasserstein_batch",
    "gw_cost",
    "lower_bound",
    "pairwise",
    "permutation_certificate",
    "rank_one_bounds",
    "sorted_coupling",
    "sorted_upper_bound",
    "wasserstein_1d",
]
