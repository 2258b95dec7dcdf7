"""
Nearest neighbours in the graph atlas
=====================================

The graph atlas of networkx holds every graph with up to seven nodes, 1,252 of them
(the empty graph aside). :func:`gwlite.pairwise` computes the GW interval of all
783,126 pairs with the sorted bounds, whole batches of pairs per vectorised call, on
every local core; the same call runs on a Dask cluster with ``engine=Client(...)``.

We then look for each graph's nearest neighbours, see which of them the intervals
prove, and draw the interval matrix and a 2-D embedding of the dataset.
"""

import matplotlib.pyplot as plt
import numpy as np

import gwlite
from gwlite.datasets import atlas
from gwlite.pairs.plots import interval_heatmap, mds_plot

# %%
# Every pair of the atlas
# -----------------------
data = atlas()  # adjacency matrices, uniform node weights
result = gwlite.pairwise(data, progress=False)
print(result)
print(f"{result.n_pairs / result.time_s:,.0f} pairs per second ({result.diagnostics['engine']})")

# %%
# Nearest neighbours, and what the intervals prove
# ------------------------------------------------
# ``knn(k)`` ranks each graph's neighbours by their upper bound. A neighbour is
# *proven* when its upper bound is below the lower bound of every graph left out of the
# list: no other graph can be closer, whatever the true GW values are.
nb = result.knn(5)
print(nb)
sizes = data.sizes
for i in (data.names.index("G7"), data.names.index("G52"), len(data) - 1):
    listed = ", ".join(
        f"{data.names[j]}{'*' if ok else ''}" for j, ok in zip(nb.indices[i], nb.proven[i])
    )
    print(f"{data.names[i]} ({sizes[i]} nodes): {listed}   (* proven)")

# %%
# How many lists does each size prove? Small graphs have few candidates and wide
# separations between their degree distributions, so their lists are proven more often.
share = [nb.proven[sizes == n].mean() for n in range(1, 8)]
fig, ax = plt.subplots(figsize=(5, 3))
ax.bar(range(1, 8), share)
ax.set_xlabel("nodes")
ax.set_ylabel("proven share of the 5 neighbours")
fig.tight_layout()

# %%
# The interval matrix
# -------------------
# Graphs ordered by size then atlas index: the upper bounds above the diagonal, the lower
# bounds below, and the relative gap. The sorted bounds are tight where degree
# sequences differ a lot (far from the diagonal) and loose between graphs of similar
# degrees.
fig = interval_heatmap(result, order=np.argsort(sizes, kind="stable"))

# %%
# A map of the atlas
# ------------------
# Classical MDS of the distances ``sqrt(upper)``: the atlas spreads out by size and by
# number of edges.
edges = np.array([int(C.sum() // 2) for C, _ in data])
fig = mds_plot(result, color=edges, color_label="edges")
