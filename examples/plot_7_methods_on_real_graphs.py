"""
Comparing methods on real graphs
================================

Every gwlite method returns a proven interval ``[lower, upper]`` around the
Gromov-Wasserstein value; they differ in how much time they spend to narrow it. On two
real social networks, this tutorial times each method, plots the width of its interval
(``upper / lower``) against its time, and shows what the default, ``method="auto"``,
does with a budget.
"""

import time

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
import ot  # noqa: F401  (imported up front: its first import takes seconds, off the timings)

import gwlite

# %%
# Two graphs of different sizes
# -----------------------------
# Zachary's karate club (34 members) and the co-appearance network of *Les Misérables*
# (77 characters), as shortest-path matrices with uniform node weights.
C1, p = gwlite.from_networkx(nx.karate_club_graph(), kind="shortest_path")
C2, q = gwlite.from_networkx(nx.les_miserables_graph(), kind="shortest_path")
print(C1.shape, C2.shape)


def run(**options):
    start = time.perf_counter()
    res = gwlite.gromov_wasserstein(C1, C2, p, q, **options)
    return time.perf_counter() - start, res


# %%
# Each method on its own
# ----------------------
# ``sorted`` is the closed form and the sorted coupling; ``lower="tlb"`` adds Memoli's
# third lower bound; ``cg`` is POT's conditional gradient from the product coupling;
# ``proximal`` is gwlite's mirror-descent solver, here from 16 starts run as one batch.
runs = {
    "sorted": run(method="sorted"),
    "sorted + TLB": run(method="sorted", lower="tlb"),
    "cg + TLB": run(method="cg", lower="tlb"),
    "proximal + TLB": run(method="proximal", n_starts=16, lower="tlb"),
}
for name, (seconds, res) in runs.items():
    width = res.upper / res.lower
    print(f"{name:15s} [{res.lower:.4f}, {res.upper:.4f}]  width {width:6.2f}x  {seconds:.3f} s")

# %%
# The default: ``auto`` within a budget
# -------------------------------------
# ``auto`` runs the methods from the cheapest up and keeps the best bound of each kind.
# Its diagnostics say which method produced each end of the interval and how long each
# stage took.
for limit in (0.5, 1.0, 3.0):
    runs[f"auto ({limit:g} s)"] = run(time_limit=limit, progress=False)
seconds, res = runs["auto (3 s)"]
print(res)
print("lower by", res.diagnostics["lower_by"], "| upper by", res.diagnostics["upper_by"])
for stage in res.diagnostics["stages"]:
    print(
        f"  {stage['stage']:9s} {stage['time_s']:6.2f} s  [{stage['lower']:.4f}, {stage['upper']:.4f}]"
    )

# %%
# Interval width against time
# ---------------------------
# Down and to the left is better. The closed form alone is fast but its interval is
# wide; TLB narrows it from below, better plans narrow it from above.
fig, ax = plt.subplots(figsize=(6.4, 3.8))
for k, (name, (seconds, res)) in enumerate(runs.items()):
    marker = "o" if name.startswith("auto") else "s"
    ax.loglog(seconds, res.upper / res.lower, marker, color=f"C{k}", label=name, ms=7)
ax.set_xlabel("seconds (this machine)")
ax.set_ylabel("upper / lower")
ax.set_title("karate vs Les Misérables: proven interval width")
ax.legend(fontsize=7, ncol=2)
fig.tight_layout()

# %%
# More pairs
# ----------
# The same comparison on every pair of three other networkx graphs (karate, the Florentine
# families, Davis's southern women): the default ``auto`` interval next to POT's
# conditional gradient with TLB.
names = {
    "karate": nx.karate_club_graph(),
    "florentine": nx.florentine_families_graph(),
    "davis": nx.davis_southern_women_graph(),
}
mats = {name: gwlite.from_networkx(G, kind="shortest_path") for name, G in names.items()}
pairs = [("karate", "florentine"), ("karate", "davis"), ("florentine", "davis")]
rows = []
for a, b in pairs:
    (A, pa), (B, pb) = mats[a], mats[b]
    cg = gwlite.gromov_wasserstein(A, B, pa, pb, method="cg", lower="tlb")
    best = gwlite.gromov_wasserstein(A, B, pa, pb, time_limit=3.0, progress=False)
    rows.append((f"{a}/{b}", cg, best))
    assert best.lower >= cg.lower - 1e-12  # auto's lower bound includes TLB

fig, ax = plt.subplots(figsize=(6.4, 2.6))
for k, (_, cg, best) in enumerate(rows):
    ax.plot(
        [cg.lower, cg.upper], [k + 0.15] * 2, lw=5, color="C0", label="cg + TLB" if k == 0 else None
    )
    ax.plot(
        [best.lower, best.upper],
        [k - 0.15] * 2,
        lw=5,
        color="C3",
        label="auto (3 s)" if k == 0 else None,
    )
ax.set_yticks(range(len(rows)), [r[0] for r in rows])
ax.set_xlabel("GW (square loss)")
ax.set_title("proven intervals")
ax.legend(fontsize=8)
fig.tight_layout()

# %%
# Every interval is a proof, so GW lies in the intersection of all of them.
lower = max(res.lower for _, res in runs.values())
upper = min(res.upper for _, res in runs.values())
print(f"karate vs Les Misérables: GW in [{lower:.4f}, {upper:.4f}]")
np.testing.assert_array_less(lower, upper + 1e-12)
