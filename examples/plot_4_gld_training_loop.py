"""
The GLD loss in a training loop
===============================

Graph-on-Logits Distillation compares the *structure* of two models' predictions: for
each sequence it builds a co-activation graph over vocabulary channels from the top-k
probabilities, and compares, node by node, how much of each token's activation is shared
with other tokens (its co-activation share, weighted by its degree) between the
student's and the teacher's graphs. It needs no shared vocabulary, so here a student with
a 300-token vocabulary learns from a teacher with a 500-token one, through the teacher's
cached top-k entries, alongside an ordinary cross-entropy loss.
"""

import matplotlib.pyplot as plt
import torch
from torch import nn

import fusion
from fusion.coactivation import degrees, share_profile, teacher_topk_values, topk_values

torch.manual_seed(0)
B, T, V_student, V_teacher, K_CACHE = 8, 24, 300, 500, 16

# %%
# A teacher cache
# ---------------
# A teacher cache stores, per position, the top entries of
# ``log_softmax(teacher_logits / tau)``: :class:`fusion.TopK`. Here the "teacher" is a
# fixed random sharp distribution (in practice: ``fusion.cache.build`` over a real model).
teacher_logits = 4 * torch.randn(B, T, V_teacher)
logprobs, indices = torch.log_softmax(teacher_logits, -1).topk(K_CACHE, dim=-1)
teacher = fusion.TopK(logprobs, indices)

# %%
# A small student and its data
# ----------------------------
inputs = torch.randint(0, V_student, (B, T))
labels = torch.randint(0, V_student, (B, T))
student = nn.Sequential(nn.Embedding(V_student, 64), nn.Tanh(), nn.Linear(64, V_student))
gld = fusion.GLDLoss(k=10)
opt = torch.optim.Adam(student.parameters(), lr=3e-3)

history = {"ce": [], "gld": []}
for _ in range(200):
    logits = student(inputs)
    ce = nn.functional.cross_entropy(logits.reshape(-1, V_student), labels.reshape(-1))
    structure = gld(logits, teacher)
    # the labels alone would make the student confident at every position, while this
    # teacher hesitates between a few tokens: the weight of GLD trades the two off
    loss = ce + 2.0 * structure
    opt.zero_grad()
    loss.backward()
    opt.step()
    history["ce"].append(ce.item())
    history["gld"].append(structure.item())
print(f"GLD {history['gld'][0]:.4f} -> {history['gld'][-1]:.4f}")
print(
    f"total {history['ce'][0] + 2 * history['gld'][0]:.4f} -> "
    f"{history['ce'][-1] + 2 * history['gld'][-1]:.4f}"
)

# %%
# Why the GLD curve falls, climbs, then settles
# ---------------------------------------------
# The optimiser minimises the *sum* ``ce + 2 * gld``, not each term. In the first few
# dozen steps GLD falls fastest (to its minimum, in the line printed below):
# the untrained student's predictions are flat, far from the teacher's shape, and
# sharpening them is cheap for both terms. The labels are random tokens, so the
# cross-entropy keeps asking for more: to memorise them the student puts almost all its
# mass on one token per position, a top-k graph whose tokens are predicted alone, while
# the teacher hesitates between a few. While the cross-entropy keeps falling GLD gives
# some of its gain back; once the labels are learnt, GLD's gradient dominates again and it
# settles. The sum falls throughout (the ``total`` line above). The weight of GLD sets the
# compromise: with a larger weight the student stays closer to the teacher's structure and
# fits the labels less.
lowest = min(range(len(history["gld"])), key=history["gld"].__getitem__)
print(
    f"GLD: {history['gld'][0]:.3f} at step 0, lowest {history['gld'][lowest]:.3f} at step "
    f"{lowest}, {history['gld'][-1]:.3f} at step {len(history['gld']) - 1}"
)

# %%
# What GLD compares
# -----------------
# Per node :math:`i` of a sequence's graph, the co-activation share
# :math:`c_i = 1 - A_{ii} / f_i` (0 for a token that is only ever predicted alone, near
# :math:`1 - 1/k` for a flat top-k) with weight :math:`\nu_i \propto f_i`, its degree. GLD is
# the 1-D Wasserstein distance between the two weighted distributions of shares,
# computed by :func:`gwlite.wasserstein_1d`: the area between the two quantile functions
# plotted below. Shares do not depend on how many tokens a tokenizer cuts a text into.


def quantiles(z_or_topk, teacher=False):
    vals, idx = teacher_topk_values(z_or_topk, k=10) if teacher else topk_values(z_or_topk, k=10)
    shares, weights = share_profile(degrees(vals, idx))
    order = torch.argsort(shares[0])
    return torch.cumsum(weights[0][order], 0).numpy(), shares[0][order].numpy()


with torch.no_grad():
    start = quantiles(
        nn.Sequential(nn.Embedding(V_student, 64), nn.Tanh(), nn.Linear(64, V_student))(inputs)
    )
    trained = quantiles(student(inputs))
    target = quantiles(teacher, teacher=True)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3))
ax1.plot(history["ce"], label="cross-entropy")
ax1.plot(history["gld"], label="GLD")
ax1.set_xlabel("step")
ax1.legend()
for (levels, values), label in (
    (target, "teacher"),
    (start, "student (untrained)"),
    (trained, "student (trained)"),
):
    ax2.step(levels, values, where="post", label=label)
ax2.set_xlabel("cumulative degree weight")
ax2.set_ylabel("co-activation share")
ax2.set_title("quantile functions, sequence 0")
ax2.legend()
fig.tight_layout()
