"""How ``v2_cache/`` was made: format version 2, by fusion at commit d222ae4 (2026-12-07).

Kept so that a format change can be tested against a cache written by the old code
(``test_cache_compact.py``). Rerunning it with newer code writes the newer format.
"""

from pathlib import Path

from fusion.cache import build
from fusion.tiny import char_tokenizer, tiny_causal_lm

HERE = Path(__file__).parent
ROWS = [{"prompt": f"Q: {a}+{a % 7}=", "response": f"A: {a + a % 7}."} for a in range(5)]
CORPUS = [r["prompt"] + r["response"] for r in ROWS]


def teacher():
    tok = char_tokenizer(CORPUS)
    return tiny_causal_lm(tok, arch="llama", d_model=16, n_head=2, seed=11), tok


if __name__ == "__main__":
    model, tok = teacher()
    build(model, tok, ROWS, HERE / "v2_cache", k=4, examples_per_shard=3, progress=False)
