"""
Verifying the approximation guarantees
======================================

``gwlite verify`` is the empirical study behind every claim gwlite makes: on random
instances of ten families (graphs, Gram matrices, Euclidean and tree metrics,
co-activation graphs) it runs every method, takes the exact solver's certified optimum
as ground truth where it applies, checks each theorem (lower <= GW <= upper, the gap
identities, feasibility of couplings, the certification rule...) and reports how tight
each bound is. Any violated check makes the command exit non-zero.

This page runs a small version of the study through its library entry point; the
command line ``gwlite verify --quick`` runs a larger one.
"""

import tempfile
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt

from gwlite.verify import run_study

# %%
# Run the study
# -------------
out = Path(tempfile.mkdtemp())
report = run_study(
    families=["erdos_renyi", "regular", "tree_metric", "gram", "coactivation"],
    sizes=[6, 7],
    seeds=[0, 1],
    quick=True,
    out_dir=out,
    progress=False,
)
print(f"{report.n_checks} checks, {len(report.violations)} violations, {report.elapsed_s:.1f} s")
assert report.ok

# %%
# The report
# ----------
# Tightness is ``lower / GW`` (1 is tight, 0 useless) and ``upper / GW`` (1 is tight),
# by method and family. Note the regular graphs: every node has the same mean-row
# feature, so the sorted closed form is 0 there while GW is not.
print(report.render())

# %%
# The figure written next to the CSVs
# -----------------------------------
# ``tightness.png`` has six panels (two losses x lower, upper, time); the square-loss row
# is shown here one panel at a time, at the file's own resolution, so its numbers stay
# legible on the page.
image = mpimg.imread(out / "tightness.png")
blank = (image[..., :3] > 0.98).all(axis=-1)  # white pixels: the gaps between panels


def gaps(empty):
    """Centres of the runs of empty lines, from the widest run down."""
    runs, start = [], None
    for i, e in enumerate([*empty, False]):
        if e and start is None:
            start = i
        elif not e and start is not None:
            runs.append((i - start, (start + i) // 2))
            start = None
    return [centre for _, centre in sorted(runs, reverse=True)]


height, width = blank.shape
# the white band between the two rows of panels that lies nearest the middle
middle = min(
    gaps(blank.all(axis=1)[height // 4 : 3 * height // 4]), key=lambda g: abs(g - height // 4)
)
# the two widest white bands between the three panels of that row (below the title)
columns = blank[height // 20 : height // 4 + middle].all(axis=0)
cuts = sorted([g for g in gaps(columns) if 0.1 * width < g < 0.9 * width][:2])
for left, right in zip([0, *cuts], [*cuts, width]):
    panel = image[: height // 4 + middle, left:right]
    fig = plt.figure(figsize=(panel.shape[1] / 100, panel.shape[0] / 100), dpi=100)
    fig.figimage(panel)
