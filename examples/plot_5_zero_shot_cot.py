"""
Zero-shot-CoT evaluation of a model
===================================

Evaluate a model with the protocol of :cite:t:`kojima2022zeroshot`: a first prompt ending in
"A: Let's think step by step." generates the reasoning, a second prompt appends the
task's answer trigger and extracts the answer, which is then *cleansed* by the paper's
rules (``mode="paper"``) and by gwlite's documented improvements (``mode="robust"``).

Any callable from a prompt to its completion is a model. Here: a scripted "reasoner"
that simulates the coin and answers in a chatty way, a careless one, and a tiny
randomly initialised Hugging Face model (which of course scores near zero) to show the
real generation path, offline.
"""

import re
import tempfile

import matplotlib.pyplot as plt
from transformers.utils import logging as hf_logging

from fusion.eval import HFModel, evaluate, generate_task
from fusion.tiny import char_tokenizer, tiny_causal_lm

hf_logging.disable_progress_bar()  # no "Loading weights" bars in the output below

items = generate_task("coin_flip", 40, seed=0)
print(items[0]["question"], "->", items[0]["answer"])


# %%
# Two scripted models
# -------------------
# The reasoner tracks the coin; in stage 2 it answers "Yes." or "No." with a capital
# and a period, which the paper's rule (lower-case tokens equal to yes/no) still reads.
def reasoner(prompt: str) -> str:
    if "Therefore" not in prompt:  # stage 1: write the reasoning
        flips = len(re.findall(r" flips the coin", prompt.split("Q:")[-1]))
        return f" The coin was flipped {flips} times."
    flips = int(re.findall(r"flipped (\d+) times", prompt)[-1])
    return " Yes." if flips % 2 == 0 else " No."


def careless(prompt: str) -> str:
    # always claims heads up, in parentheses: the paper's rule only turns quotes,
    # periods, colons, commas and whitespace into spaces, so "(yes)" is not a yes there;
    # the robust rule reads it (and is right on the items whose answer is yes)
    return " I think so." if "Therefore" not in prompt else " It is heads up (yes)."


results = {}
for name, model in [("reasoner", reasoner), ("careless", careless)]:
    results[name] = evaluate(model, items, task="coin_flip", progress=False)
    print(name, results[name].summary())

# %%
# A real (tiny) Hugging Face model, saved and loaded back by path
# ---------------------------------------------------------------
tok = char_tokenizer([it["question"] for it in items] + ["Let's think step by step. yes no"])
with tempfile.TemporaryDirectory() as path:
    tiny_causal_lm(tok, n_layer=1, d_model=32, max_positions=512).save_pretrained(path)
    tok.save_pretrained(path)
    hf = HFModel(path, batch_size=8)
    results["tiny HF (random)"] = evaluate(
        hf,
        items[:8],
        task="coin_flip",
        max_new_tokens_reasoning=16,
        max_new_tokens_answer=4,
        progress=False,
    )
record = results["tiny HF (random)"].records[0]
print(repr(record.reasoning[:60]), "->", repr(record.answer_text))

# %%
# Paper vs robust cleansing
# -------------------------
names = list(results)
fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(
    [i - 0.2 for i in range(len(names))],
    [results[n].accuracy for n in names],
    width=0.4,
    label="paper cleansing",
)
ax.bar(
    [i + 0.2 for i in range(len(names))],
    [results[n].robust_accuracy for n in names],
    width=0.4,
    label="robust cleansing",
)
ax.set_xticks(range(len(names)), names)
ax.set_ylabel("accuracy")
ax.set_ylim(0, 1.05)
ax.legend()
fig.tight_layout()
