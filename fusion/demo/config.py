"""Sizes of a demo run: model architectures, tokenizers and the three presets.

Every number that decides how long a run takes and how much its models learn lives in a
:class:`DemoConfig`; :meth:`DemoConfig.full`, :meth:`~DemoConfig.quick` and
:meth:`~DemoConfig.tiny` are the presets behind ``python -m fusion demo [--quick | --tiny]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["TASKS", "DemoConfig", "ModelSize", "TokenizerSpec"]

#: Task families, in table order: the first teacher learns coin flips, the second arithmetic.
TASKS = ("coin_flip", "multistep_arithmetic")


@dataclass(frozen=True)
class ModelSize:
    """Architecture of one tiny causal LM (see :func:`fusion.tiny.tiny_causal_lm`).

    Llama by default: with rotary positions these models learn both tasks many times
    faster than GPT-2 with learned positions (measured: 64% against 7% on the arithmetic
    after 1000 steps).
    """

    arch: str = "llama"
    n_layer: int = 2
    d_model: int = 64
    n_head: int = 4
    max_positions: int = 512


@dataclass(frozen=True)
class TokenizerSpec:
    """How one model's tokenizer is built from the generated corpus (:mod:`fusion.tiny`).

    Attributes
    ----------
    kind : {"bpe", "char"}
        Byte-level BPE trained with the ``tokenizers`` library, or one token per character.
    vocab : int
        BPE vocabulary size (special tokens and the 256 byte symbols included); ignored for
        ``"char"``. Past about 1000 the demo's corpus has nothing left to merge.
    corpus : {"all", "odd"}
        Train on every text of the tokenizer corpus, or on every other one, so that two BPEs
        of similar size still differ in their merges.
    """

    kind: str = "bpe"
    vocab: int = 1000
    corpus: str = "all"

    def check(self) -> None:
        """Raise ValueError for a tokenizer that cannot be built."""
        if self.kind not in ("bpe", "char"):
            raise ValueError(f"tokenizer kind must be 'bpe' or 'char', got {self.kind!r}")
        if self.corpus not in ("all", "odd"):
            raise ValueError(f"tokenizer corpus must be 'all' or 'odd', got {self.corpus!r}")
        if self.kind == "bpe" and self.vocab < 300:
            raise ValueError(f"a BPE vocabulary needs >= 300 entries, got {self.vocab}")

    @property
    def label(self) -> str:
        """Short description, e.g. ``"BPE 1000"`` or ``"char"``."""
        return "char" if self.kind == "char" else f"BPE {self.vocab}"


def _workers() -> int:
    return min(2, os.cpu_count() or 1)


@dataclass(frozen=True)
class DemoConfig:
    """Everything that sizes a demo run.

    Attributes
    ----------
    teacher_items : int
        Training items of each teacher, on its own family (each item gives two SFT
        examples: reasoning, then answer).
    pivot_items : int
        The pivot's training items per family, drawn apart from the teachers' (the teachers
        are cached over exactly these).
    eval_items : int
        Held-out items per task; they never occur in any training set.
    coin_teacher_steps, arith_teacher_steps : int
        Optimiser steps of the coin-flip and of the arithmetic teacher.
    coin_teacher_batch_size, arith_teacher_batch_size : int
        Their examples per step (coin-flip examples are about twice as long).
    pivot_warmup_steps : int
        SFT steps of each seed's pivot before the three variants branch off from the same
        weights (0: every variant starts from the random initialisation). A warm start
        mirrors the paper, whose pivot is a trained model, not a random one; it also keeps
        distillation from sharpening a random model's guesses.
    pivot_steps : int
        Steps of every pivot variant after the warm start.
    batch_size : int
        The pivots' examples per step.
    learning_rate : float
        Peak AdamW learning rate: linear warm-up over ``warmup_steps``, then cosine decay
        (teachers); for the pivots, constant through the warm start and cosine decay over
        the variants' steps.
    warmup_steps : int
    seeds : tuple of int
        Pivot seeds (initialisation and data order); every variant runs every seed.
    lambda_, beta : float
        :class:`fusion.FusionLoss` weights of the distilled variants.
    k, m : int
        GLD's kept entries per position and compared degrees.
    cache_k : int
        Entries cached per teacher token (also ULD's top-k).
    arithmetic_terms, arithmetic_max_abs : int
        Size of the arithmetic items (numbers per group, largest magnitude); see
        :func:`fusion.eval.tasks.arithmetic_items`.
    coin_tokenizer, arith_tokenizer, pivot_tokenizer : TokenizerSpec
        Three different tokenizers: the pivot's BPE is trained on half of the corpus, so
        its merges differ from a teacher's even at a similar size.
    teacher_coin, teacher_arith, pivot : ModelSize
    eval_batch_size : int
        Prompts per generation batch.
    workers : int
        Processes that train and evaluate models in parallel (default: 2, or 1 on a
        single-core machine). Every job is seeded, so results do not depend on it.
    threads : int
        ``torch.set_num_threads`` per worker (1 by default: these models are too small
        for intra-op threads to pay off, and a thread competing with another busy
        process slows them down many times).
    data_seed : int
        Seed of the generated data (every role, e.g. teacher items or held-out items, has
        its own stream).
    """

    teacher_items: int = 1500
    pivot_items: int = 1500
    eval_items: int = 200
    coin_teacher_steps: int = 500
    arith_teacher_steps: int = 1000
    coin_teacher_batch_size: int = 16
    arith_teacher_batch_size: int = 16
    pivot_warmup_steps: int = 900
    pivot_steps: int = 400
    batch_size: int = 16
    learning_rate: float = 3e-3
    warmup_steps: int = 30
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    lambda_: float = 0.5
    beta: float = 1.0
    k: int = 10
    m: int = 64
    cache_k: int = 10
    arithmetic_terms: int = 2
    arithmetic_max_abs: int = 2
    coin_tokenizer: TokenizerSpec = field(default_factory=lambda: TokenizerSpec("bpe", 1000))
    arith_tokenizer: TokenizerSpec = field(default_factory=lambda: TokenizerSpec("bpe", 420))
    pivot_tokenizer: TokenizerSpec = field(
        default_factory=lambda: TokenizerSpec("bpe", 800, corpus="odd")
    )
    teacher_coin: ModelSize = field(default_factory=ModelSize)
    teacher_arith: ModelSize = field(default_factory=ModelSize)
    pivot: ModelSize = field(default_factory=ModelSize)
    eval_batch_size: int = 64
    workers: int = field(default_factory=_workers)
    threads: int = 1
    data_seed: int = 0

    @classmethod
    def full(cls, **overrides: Any) -> DemoConfig:
        """The default run: five seeds, 200 held-out items per task."""
        return replace(cls(), **overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """``--quick``: teachers at 80% or more, pivots well above the majority answer.

        Three seeds, 100 held-out items per task, 800 pivot items per family, shorter
        teacher runs, warm starts and pivot variants.
        """
        quick = cls(
            pivot_items=800,
            eval_items=100,
            coin_teacher_steps=350,
            coin_teacher_batch_size=8,
            arith_teacher_steps=1000,
            pivot_warmup_steps=700,
            pivot_steps=200,
            seeds=(0, 1, 2),
        )
        return replace(quick, **overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> DemoConfig:
        """``--tiny``: tutorials and tests; the teachers learn their own family.

        Easier arithmetic (numbers in ``[-1, 1]``), short runs, one seed, 60 held-out items
        per task, a narrow pivot that gets too few steps to learn much.
        """
        narrow = ModelSize(d_model=32, n_head=2)
        tiny = cls(
            teacher_items=800,
            pivot_items=200,
            eval_items=60,
            coin_teacher_steps=300,
            coin_teacher_batch_size=8,
            arith_teacher_steps=300,
            pivot_warmup_steps=60,
            pivot_steps=30,
            seeds=(0,),
            arithmetic_max_abs=1,
            pivot=narrow,
        )
        return replace(tiny, **overrides)

    def check(self) -> None:
        """Raise ValueError for sizes that cannot run."""
        positive = (
            "teacher_items",
            "pivot_items",
            "eval_items",
            "coin_teacher_steps",
            "arith_teacher_steps",
            "coin_teacher_batch_size",
            "arith_teacher_batch_size",
            "pivot_steps",
            "batch_size",
            "workers",
            "threads",
            "eval_batch_size",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.pivot_warmup_steps < 0:
            raise ValueError(f"pivot_warmup_steps must be >= 0, got {self.pivot_warmup_steps}")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        if not 1 <= self.arithmetic_terms <= 4 or not 1 <= self.arithmetic_max_abs <= 9:
            raise ValueError("arithmetic_terms must lie in 1..4 and arithmetic_max_abs in 1..9")
        if self.k > self.cache_k:
            raise ValueError(f"k={self.k} exceeds cache_k={self.cache_k}")
        if not 0.0 <= self.lambda_ <= 1.0 or self.beta < 0:
            raise ValueError(
                f"need 0 <= lambda_ <= 1 and beta >= 0, got {self.lambda_}, {self.beta}"
            )
        for spec in (self.coin_tokenizer, self.arith_tokenizer, self.pivot_tokenizer):
            spec.check()
