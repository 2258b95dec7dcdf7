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


def runs(empty):
    """(start, end) of each run of empty lines."""
    found, start = [], None
    for i, e in enumerate([*empty, False]):
        if e and start is None:
            start = i
        elif not e and start is not None:
            found.append((start, i))
            start = None
    return found


def cut_near(empty, target):
    """The centre of the run of empty lines nearest to ``target``."""
    start, end = min(runs(empty), key=lambda r: max(r[0] - target, 0, target - r[1]))
    return (start + end) // 2


height, width = blank.shape
# the white band between the two rows of panels, then the two between the three panels of
# the first row (constrained layout: each panel with its colour bar fills a third)
middle = cut_near(blank.all(axis=1), height // 2)
columns = blank[height // 20 : middle].all(axis=0)
cuts = [cut_near(columns, width // 3), cut_near(columns, 2 * width // 3)]
for left, right in zip([0, *cuts], [*cuts, width]):
    panel = image[:middle, left:right]
    fig = plt.figure(figsize=(panel.shape[1] / 100, panel.shape[0] / 100), dpi=100)
    fig.figimage(panel)
