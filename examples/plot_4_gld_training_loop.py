"""
The GLD loss in a training loop
===============================

Graph-on-Logits Distillation compares the *structure* of two models' predictions: for
each sequence it builds a co-activation graph over vocabulary channels from the top-k
probabilities, and compares the sorted weighted degrees of the student's and the
teacher's graphs. It needs no shared vocabulary, so here a student with a 300-token
vocabulary learns from a teacher with a 500-token one, through the teacher's cached
top-k entries, alongside an ordinary cross-entropy loss.
"""

import matplotlib.pyplot as plt
import torch
from torch import nn

import fusion
from fusion.coactivation import degree_features, degrees, teacher_topk_values, topk_values

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
gld = fusion.GLDLoss(k=10, m=64)
opt = torch.optim.Adam(student.parameters(), lr=3e-3)

history = {"ce": [], "gld": []}
for _ in range(200):
    logits = student(inputs)
    ce = nn.functional.cross_entropy(logits.reshape(-1, V_student), labels.reshape(-1))
    structure = gld(logits, teacher)
    loss = ce + 0.5 * structure
    opt.zero_grad()
    loss.backward()
    opt.step()
    history["ce"].append(ce.item())
    history["gld"].append(structure.item())
print(f"GLD {history['gld'][0]:.4f} -> {history['gld'][-1]:.4f}")

# %%
# What GLD compares
# -----------------
# The sorted top-``m`` weighted degrees of each sequence's co-activation graph; the
# loss is their L1 distance, which is ``m`` times the 1-D Wasserstein distance computed
# by :func:`gwlite.wasserstein_1d` (a truncated, scaled sorted closed form of GW).
with torch.no_grad():
    s_vals, s_idx = topk_values(student(inputs), k=10)
    t_vals, t_idx = teacher_topk_values(teacher, k=10)
    f_student = degree_features(degrees(s_vals, s_idx).degrees, 64)[0]
    f_teacher = degree_features(degrees(t_vals, t_idx).degrees, 64)[0]

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3))
ax1.plot(history["ce"], label="cross-entropy")
ax1.plot(history["gld"], label="GLD")
ax1.set_xlabel("step")
ax1.legend()
ax2.plot(f_teacher.numpy(), label="teacher")
ax2.plot(f_student.numpy(), label="student (trained)")
ax2.set_xlabel("rank of the channel")
ax2.set_ylabel("weighted degree")
ax2.set_title("sorted degree features, sequence 0")
ax2.legend()
fig.tight_layout()
