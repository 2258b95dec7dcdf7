"""
The end-to-end fusion demo
==========================

``python -m fusion demo`` runs the whole InfiGFusion-style pipeline offline on tiny
models: it generates reasoning data with exact chain-of-thought targets, trains two
teachers with *different tokenizers* (character level, and a BPE trained on the
corpus) on different task families, caches their top-k predictions with
:mod:`fusion.cache`, trains a pivot three ways (SFT; SFT + ULD; SFT + ULD + GLD) with
:class:`fusion.FusionTrainer`, and evaluates every model with Zero-shot-CoT.

The full run takes about 5 minutes on 2 cores; this page runs the ``tiny`` preset (a
smoke test, seconds, one worker), whose models learn almost nothing: read the numbers
as a demonstration of the pipeline, and the training guide for the full run's table.
"""

import tempfile
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt

from fusion.demo import DemoConfig, run_demo

config = DemoConfig.tiny(workers=1)
print(config)

# %%
# Run it
# ------
out = Path(tempfile.mkdtemp())
result = run_demo(config, out, progress=False, echo=None)
print(f"{len(result.rows)} (model, seed, task) rows in {result.timings['total']:.1f} s")

# %%
# The table (accuracy %, mean and spread over seeds)
# --------------------------------------------------
print(result.table)

# %%
# What the run says about itself
# ------------------------------
print(result.reading)

# %%
# The files it wrote
# ------------------
for name, path in sorted(result.paths.items()):
    print(f"{name:10s} {path.relative_to(out)}")

fig, ax = plt.subplots(figsize=(9, 4))
ax.imshow(mpimg.imread(result.paths["plot"]))
ax.axis("off")
fig.tight_layout()
