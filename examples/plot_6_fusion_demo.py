"""
The end-to-end fusion demo
==========================

``python -m fusion demo`` runs the whole InfiGFusion-style pipeline offline on tiny
models: it generates reasoning data with exact chain-of-thought targets, trains two
teachers with *different tokenizers* (two byte-level BPEs of 1000 and 420 tokens) on
different task families (coin flips; multistep arithmetic), caches their top-k
predictions with :mod:`fusion.cache`, trains a pivot (its own BPE of 800 tokens) three
ways (SFT; SFT + ULD; SFT + ULD + GLD) with :class:`fusion.FusionTrainer`, and evaluates
every model with Zero-shot-CoT on held-out items.

This page runs the ``tiny`` preset (about 50 s of CPU time on two cores, measured on
:doc:`/benchmarks/demo_study`; the wall-clock time it prints depends on the machine's load): easier arithmetic
(numbers in ``[-1, 1]``), one seed, 60 held-out items per task. Its teachers learn their
own family well above the majority answer; its pivot gets only 90 steps, too few to learn
either family, so the pivot columns sit near the majority answer. ``--quick`` and the
full run train the pivot properly; the study (``python -m fusion study``) measures when
distillation helps.
"""

import tempfile
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt

from fusion.demo import DemoConfig, run_demo

config = DemoConfig.tiny()
print(config)

# %%
# Run it
# ------
# Every step is a job with its own directory under ``out/jobs``: running the same
# command again reuses them (a killed run resumes where it stopped).
out = Path(tempfile.mkdtemp())
result = run_demo(config, out, progress=False, echo=None)
stats = result.stats
print(
    f"{stats.ran} jobs in {stats.total_wall_s:.1f} s wall time, {stats.total_cpu_s:.1f} s CPU "
    f"time, {config.workers} worker process(es)"
)

# %%
# The table (accuracy %, Zero-shot-CoT, paper cleansing)
# ------------------------------------------------------
# Each teacher is evaluated on its own family (``-`` on the other); the pivots on both.
# One row per model, so that the table fits the page (``result.table`` has one column per
# model, as the command line prints it).
accuracy = {(r.model.label, r.task): r.accuracy for r in result.rows}
tasks = list(dict.fromkeys(task for _, task in accuracy))
print(f"{'model':26s}" + "".join(f"{task:>22s}" for task in tasks))
for label in dict.fromkeys(label for label, _ in accuracy):
    cells = [accuracy.get((label, task)) for task in tasks]
    print(
        f"{label:26s}" + "".join("-".rjust(22) if a is None else f"{100 * a:22.1f}" for a in cells)
    )

# %%
# The teachers against the majority answer
# ----------------------------------------
for teacher, task in result.own_tasks.items():
    gain = 100 * (accuracy[(teacher.label, task)] - accuracy[("majority answer", task)])
    print(
        f"{teacher.label}: {100 * accuracy[(teacher.label, task)]:.0f}% on {task}, "
        f"{gain:+.0f} points over the majority answer"
    )

# %%
# What the run says about itself
# ------------------------------
print(result.reading)

# %%
# The files it wrote
# ------------------
for name, path in sorted(result.paths.items()):
    print(f"{name:12s} {path.relative_to(out)}")

fig, ax = plt.subplots(figsize=(9, 4))
ax.imshow(mpimg.imread(result.paths["plot"]))
ax.axis("off")
fig.tight_layout()
