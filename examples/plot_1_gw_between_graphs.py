"""
GW between two graphs, with every method
========================================

Compute the Gromov-Wasserstein value between two small social networks with each method
gwlite offers, and read what each result *proves*: the interval ``[lower, upper]``
always contains the true GW value, and ``certified`` says when the value is proven to be
the optimum.
"""

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np

import gwlite

# %%
# Two graphs as metric-measure spaces
# -----------------------------------
# Shortest-path distances and uniform node weights. The graphs have different sizes:
# GW compares them without any node correspondence.
C1, p = gwlite.from_networkx(nx.florentine_families_graph(), kind="shortest_path")
C2, q = gwlite.from_networkx(nx.krackhardt_kite_graph(), kind="shortest_path")
print(C1.shape, C2.shape)

# %%
# The sorted closed form
# ----------------------
# ``method="sorted"`` computes InfiGFusion's closed form (a lower bound) and the GW cost
# of the sorted coupling (an upper bound) in one pass over each matrix. (The default
# method, ``"auto"``, starts there and escalates: see the tutorial comparing methods.)
res = gwlite.gromov_wasserstein(C1, C2, p, q, method="sorted")
print(res)

# %%
# A tighter lower bound, a better upper bound
# -------------------------------------------
# ``lower="tlb"`` reports Memoli's third lower bound, which dominates the closed form;
# POT's conditional gradient finds a better coupling (a local optimum); the entropic
# solver's plan is rounded onto the transport polytope before it is priced.
#
# POT is imported the first time a method needs it, which takes far longer than any
# solve here; one untimed call first, so that the times below are the solvers' own.
gwlite.gromov_wasserstein(C1, C2, p, q, method="cg", lower="tlb")

results = {
    "sorted": res,
    "sorted + TLB": gwlite.gromov_wasserstein(C1, C2, p, q, method="sorted", lower="tlb"),
    "cg + TLB": gwlite.gromov_wasserstein(C1, C2, p, q, method="cg", lower="tlb"),
    "entropic + TLB": gwlite.gromov_wasserstein(
        C1, C2, p, q, method="entropic", epsilon=0.05, lower="tlb"
    ),
}
for name, r in results.items():
    print(
        f"{name:15s} value={r.value:.4f}  [{r.lower:.4f}, {r.upper:.4f}]  "
        f"converged={r.converged}  {r.time_s * 1e3:.1f} ms"
    )

# %%
# A certified optimum on a small problem
# --------------------------------------
# ``method="exact"`` runs a branch and bound over permutations (uniform weights,
# ``n == m``). For square loss it is certified when both centred matrices are positive
# semi-definite or both negative semi-definite, which holds for tree metrics (shortest
# paths on trees are metrics of negative type).
T1, _ = gwlite.from_networkx(nx.random_labeled_tree(8, seed=1), kind="shortest_path")
T2, _ = gwlite.from_networkx(nx.random_labeled_tree(8, seed=2), kind="shortest_path")
exact = gwlite.gromov_wasserstein(T1, T2, method="exact")
print(exact)

# %%
# The intervals side by side
# --------------------------
# The bar is what is proven, the dot is the method's estimate ``value``, which always
# lies on its bar. For ``sorted`` the value is the closed form; asking for
# ``lower="tlb"`` replaces the proven lower end by Memoli's TLB, which dominates the
# closed form, so in the ``sorted + TLB`` row the value is raised to TLB, the bar's left
# end (the raw closed form, a weaker lower bound, stays in
# ``diagnostics["closed_form"]``). For ``cg`` and ``entropic`` the value is the cost of
# the returned coupling, the bar's right end.
fig, ax = plt.subplots(figsize=(6, 2.8))
for row, r in enumerate(results.values()):
    ax.plot([r.lower, r.upper], [row, row], lw=6, solid_capstyle="butt", color="C0")
    ax.plot(r.value, row, "o", color="C3")
ax.set_yticks(range(len(results)), list(results))
ax.set_xlabel("GW (square loss)")
ax.set_title("proven intervals [lower, upper] (dot: value)")
fig.tight_layout()

print(
    "sorted + TLB: value",
    results["sorted + TLB"].value,
    "closed form",
    results["sorted + TLB"].diagnostics["closed_form"],
)

# %%
# Every interval contains GW, so the true value lies in their intersection:
best_lower = max(r.lower for r in results.values())
best_upper = min(r.upper for r in results.values())
print(f"GW in [{best_lower:.4f}, {best_upper:.4f}]")
assert best_lower <= best_upper
assert all(r.lower <= r.value <= r.upper for r in results.values())
np.testing.assert_array_less(0, best_upper)
