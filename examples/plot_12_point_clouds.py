"""
GW between point clouds, without distance matrices
==================================================

Shapes and single-cell data come as point clouds, often with 10^4 to 10^6 points: their
distance matrices would not fit in memory (20,000 points: 3.2 GB each).
:class:`gwlite.PointCloud` wraps the coordinates instead, and every function that takes
a structure matrix takes it: distances are computed in blocks of bounded memory, and for
squared Euclidean distances the GW cost factors exactly through the coordinates.

Above a few thousand points ``method="auto"`` runs the multiscale solver: quantise both
clouds, solve GW between the cluster centres, lift the plan to a feasible sparse
coupling of the points and refine it. ``upper`` is that coupling's exact cost, ``lower``
the best of the point-cloud lower bounds (proofs on the theory page). Here a torus is
compared with a trefoil knot, and with a rotated, translated and shuffled copy of itself
(GW = 0) at 2,000 points, then the two shapes at 100,000 points.
"""

import matplotlib.pyplot as plt
import numpy as np

import gwlite
from gwlite.pointcloud.samples import rigid_copy, torus, trefoil

n = 2000
X = torus(n, seed=1)
Y = trefoil(n, seed=2)
Z, perm = rigid_copy(X, seed=3)  # point i of X is point perm.argsort()[i] of Z
shape = gwlite.PointCloud(X, metric="sqeuclidean")

# %%
# Two different shapes
# --------------------
# ``n_clusters`` sets the size of the coarse problem (1000 by default; 100 here to keep
# the page fast). The result says how it was computed and what each number is.
res = gwlite.gromov_wasserstein(
    shape, gwlite.PointCloud(Y, metric="sqeuclidean"), method="multiscale", n_clusters=100
)
print(res)
print({name: f"{value:.4g}" for name, value in res.diagnostics["bounds"].items()})
print([(s["stage"], round(s["time_s"], 2)) for s in res.diagnostics["stages"]])

# %%
# A rigid copy (GW = 0)
# ---------------------
# The copy is the same metric space, so GW = 0. The refinement aligns the clouds by the
# orthogonal map the coarse plan suggests and matches each point to one of its nearest
# moved neighbours: the plan is a permutation. The torus is symmetric about its axis,
# so the alignment may be one of its other rotations, which maps the shape onto itself
# but not the samples onto each other: the cost is then small but not zero, and the
# share of mass sent to each point's true partner (printed below) can be low even when
# the upper bound is a small fraction of the product coupling's cost. Recovering the
# exact sample-to-sample isometry is not guaranteed (see the point-cloud benchmark page).
moved = gwlite.PointCloud(Z, metric="sqeuclidean")
copy = gwlite.gromov_wasserstein(shape, moved, method="multiscale", n_clusters=100)
print(copy)
product = gwlite.pointcloud.geometry.product_cost(shape, moved)
print(f"upper / cost of the product coupling: {copy.upper / product:.2e}")
T = copy.coupling.tocoo()
print(f"mass sent to the true partner: {T.data[T.col == perm.argsort()[T.row]].sum():.1%}")

# %%
# The matching, drawn
# -------------------
# Forty points of the torus and where the plan sends them, on the trefoil (left) and on
# the moved copy (right, drawn back in the torus's frame by the true map).
rng = np.random.default_rng(0)
show = rng.choice(n, 40, replace=False)
fig = plt.figure(figsize=(9, 4.2))
for col, (target, result, title) in enumerate(
    [(Y, res, "torus -> trefoil"), (X[perm], copy, "torus -> moved copy")]
):
    ax = fig.add_subplot(1, 2, col + 1, projection="3d")
    offset = np.array([3.2, 0, 0])
    ax.scatter(*X.T, s=0.3, alpha=0.15, color="C0")
    ax.scatter(*(target + offset).T, s=0.3, alpha=0.15, color="C1")
    plan = result.coupling.tocsr()
    for i in show:
        row = plan[[i], :].tocoo()
        j = row.col[np.argmax(row.data)]  # the heaviest partner
        ax.plot(*np.stack([X[i], target[j] + offset]).T, color="k", lw=0.6)
    ax.set_title(title)
    ax.set_axis_off()
fig.tight_layout()
plt.show()

# %%
# At 100,000 points
# -----------------
# The same call with the defaults (1,000 clusters) at n = 100,000, where no distance
# matrix is built (each would take 80 GB). ``method="auto"`` takes the multiscale route
# and says so; on an idle 2-core machine this takes about half a minute and under 1 GB.
# ``lower`` is the best proven lower bound (``lower_by`` names it), ``upper`` the exact
# cost of the returned sparse coupling.
big = 100_000
Xb, Yb = torus(big, seed=1), trefoil(big, seed=2)
large = gwlite.gromov_wasserstein(
    gwlite.PointCloud(Xb, metric="sqeuclidean"),
    gwlite.PointCloud(Yb, metric="sqeuclidean"),
    progress=False,
)
print(large.diagnostics["route"])
print(
    f"proven interval [{large.lower:.4f}, {large.upper:.4f}], "
    f"lower bound by {large.diagnostics['lower_by']}, {large.time_s:.0f} s"
)

# %%
# Each torus point is coloured by its angle around the axis, and each trefoil point
# takes the colour of the torus point that sends it the most mass: along the knot the
# colours change gradually, so nearby points of the knot receive mass from nearby points
# of the torus. 5,000 of the 100,000 points of each shape are drawn.
angle = np.arctan2(Xb[:, 1], Xb[:, 0])
heaviest = np.asarray(large.coupling.tocsc().argmax(axis=0)).ravel()  # per trefoil point
shown = np.random.default_rng(1).choice(big, 5000, replace=False)
fig = plt.figure(figsize=(9, 4.2))
for col, (points, colour, title) in enumerate(
    [(Xb, angle, "torus, by angle"), (Yb, angle[heaviest], "trefoil, colour of its source")]
):
    ax = fig.add_subplot(1, 2, col + 1, projection="3d")
    ax.scatter(*points[shown].T, s=1.0, c=colour[shown], cmap="hsv")
    ax.set_title(title)
    ax.set_axis_off()
fig.tight_layout()
plt.show()

# %%
# The benchmark (``benchmarks/bench_pointcloud.py``, :doc:`/benchmarks/pointcloud`) runs
# these calls at n = 100,000 with the peers and the rigid copy (a plan costing 0.34% of
# the product coupling). At that size the plan splits each point's mass between matched
# clusters, so the exact sample-to-sample isometry of a rigid copy is not recovered.
