r"""Trainer options shared by :class:`fusion.FusionTrainer` and :class:`fusion.trl.FusionSFTTrainer`,
and on-policy distillation.

*One signature.* The fusion options of both trainers are the keyword parameters of
``fusion.training.FusionTrainingMixin._init_fusion``; each trainer takes them from its
``**kwargs`` (:func:`fusion_options`) and shows them in its own signature
(:func:`with_fusion_signature`), so they are defined once.

*On-policy distillation* (Agarwal et al. 2024; TRL's ``GKDTrainer``): with probability
``lmbda`` an accumulation window is replaced by the pivot's own completions of the same
prompts, which the online teachers then score. The draw is per window (not per
micro-batch), so that the window's token counts, which normalise every micro-batch, are
those of the batches actually trained on.

References
----------
R. Agarwal et al. On-Policy Distillation of Language Models: Learning from
Self-Generated Mistakes. ICLR 2024 (arXiv 2306.13649).
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from fusion._deprecation import pop_renamed

__all__ = [
    "DISTILLATIONS",
    "OnPolicy",
    "check_shared_tokenizer",
    "check_shared_vocabulary",
    "fusion_options",
    "with_fusion_signature",
]

#: the logit terms a trainer can use next to GLD
DISTILLATIONS = ("uld", "jsd")
#: keyword of every batch that carries the prompts' text for on-policy completion
PROMPTS_KEY = "prompts"
DEFAULT_GENERATION = {"max_new_tokens": 128, "do_sample": True}


def _keyword_parameters(init: Callable) -> list[inspect.Parameter]:
    params = list(inspect.signature(init).parameters.values())
    return [p for p in params[2:] if p.kind is not inspect.Parameter.VAR_KEYWORD]  # self, model


def fusion_options(kwargs: dict[str, Any], init: Callable | None = None) -> dict[str, Any]:
    """Pop the fusion options (and their deprecated names) out of a trainer's ``kwargs``.

    ``init`` is the function whose keyword parameters are the options (default
    ``fusion.training.FusionTrainingMixin._init_fusion``).
    """
    if init is None:
        from fusion.training import FusionTrainingMixin

        init = FusionTrainingMixin._init_fusion
    renamed = pop_renamed(kwargs)
    kwargs.clear()
    kwargs.update(renamed)
    names = {p.name for p in _keyword_parameters(init)}
    return {name: kwargs.pop(name) for name in list(kwargs) if name in names}


def with_fusion_signature(cls: type) -> type:
    """Show the fusion options in ``cls.__init__``'s signature (for help() and the docs)."""
    from fusion.training import FusionTrainingMixin

    own = inspect.signature(cls.__init__)
    params = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    taken = {p.name for p in params}
    extra = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in _keyword_parameters(FusionTrainingMixin._init_fusion)
        if p.name not in taken
    ]
    var = [p for p in own.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    cls.__init__.__signature__ = own.replace(parameters=params + extra + var)
    return cls


def check_shared_vocabulary(teachers: Sequence[Any], pivot_vocab: int | None) -> None:
    """JSD compares distributions over one vocabulary: every teacher must have the pivot's."""
    for j, teacher in enumerate(teachers):
        size = teacher.vocab_size
        if pivot_vocab is not None and size != pivot_vocab:
            raise ValueError(
                f"distillation='jsd' needs teachers with the pivot's vocabulary: teacher {j} "
                f"has {size} entries, the pivot {pivot_vocab}; use distillation='uld' for "
                "teachers with another tokenizer"
            )


def check_shared_tokenizer(teachers: Sequence[Any], tokenizer: Any) -> None:
    """JSD pairs the j-th target of the pivot with the j-th of a teacher: one tokenizer."""
    from fusion.cache import TeacherCache, tokenizer_sha256

    if tokenizer is None:
        return
    mine = tokenizer_sha256(tokenizer)
    for j, teacher in enumerate(teachers):
        if isinstance(teacher, TeacherCache):
            theirs = teacher.manifest["tokenizer_sha256"]
        else:
            theirs = tokenizer_sha256(teacher.tokenizer)
        if theirs != mine:
            raise ValueError(
                f"distillation='jsd' needs teachers with the pivot's tokenizer: teacher {j}'s "
                "differs (another vocabulary or merges); use distillation='uld' for it"
            )


def most_entries(teachers: Sequence[Any]) -> int:
    """Entries a JSD teacher can pass per row: the smallest cache ``k``, else the vocabulary."""
    from fusion.cache import TeacherCache

    sizes = [t.k if isinstance(t, TeacherCache) else t.vocab_size for t in teachers]
    return min(sizes)


@dataclass
class OnPolicy:
    """Replace a fraction ``lmbda`` of the accumulation windows by the pivot's completions.

    Attributes
    ----------
    lmbda : float
        Probability that a window is completed by the pivot.
    generation_kwargs : dict
        Passed to ``generate``.
    windows, completed : int
        Windows drawn so far, and how many of them the pivot completed.
    """

    lmbda: float
    generation_kwargs: dict[str, Any]
    windows: int = 0
    completed: int = 0
    _rng: random.Random | None = field(default=None, repr=False)

    @classmethod
    def make(
        cls, lmbda: Any, generation_kwargs: Mapping[str, Any] | None, teachers: Sequence[Any]
    ) -> OnPolicy | None:
        """Validated options, or ``None`` when ``lmbda`` is 0."""
        from fusion.cache import TeacherCache

        if isinstance(lmbda, bool) or not isinstance(lmbda, int | float):
            raise ValueError(f"lmbda must be a number in [0, 1], got {lmbda!r}")
        if not (math.isfinite(lmbda) and 0.0 <= lmbda <= 1.0):
            raise ValueError(f"lmbda must be in [0, 1], got {lmbda}")
        if lmbda == 0:
            return None
        cached = [j for j, t in enumerate(teachers) if isinstance(t, TeacherCache)]
        if cached or not teachers:
            raise ValueError(
                "on-policy distillation (lmbda > 0) needs online teachers only: a cache "
                f"cannot score the pivot's new completions (cached teacher(s) {cached})"
            )
        return cls(float(lmbda), {**DEFAULT_GENERATION, **dict(generation_kwargs or {})})

    def draw(self, seed: int) -> bool:
        """Whether the next window is completed by the pivot (a seeded, reproducible draw)."""
        if self._rng is None:
            self._rng = random.Random(seed)
        self.windows += 1
        hit = self._rng.random() < self.lmbda
        self.completed += hit
        return hit

    def complete(self, model: Any, collator: Any, prompts: Sequence[str]) -> dict[str, Any]:
        """A collated batch of ``prompts`` with the pivot's own completions as responses.

        The prompts are encoded as the collator encodes a pair (chat template or BOS), up
        to the first target position; the completion ends at the first EOS and is decoded
        to text, which the collator then encodes for the pivot and every online teacher.
        """
        tok = collator.tokenizer
        encoded = collator.encoder.encode([{"prompt": p, "response": ""} for p in prompts])
        heads = [e.input_ids[: e.start] for e in encoded]
        width = max(len(h) for h in heads)
        device = next(model.parameters()).device
        ids = torch.full((len(heads), width), collator.pad_id, dtype=torch.long)
        mask = torch.zeros((len(heads), width), dtype=torch.long)
        for b, head in enumerate(heads):  # left padding: generation continues every row
            ids[b, width - len(head) :] = torch.tensor(head, dtype=torch.long)
            mask[b, width - len(head) :] = 1
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    pad_token_id=collator.pad_id,
                    **self.generation_kwargs,
                )
        finally:
            model.train(was_training)
        texts = [self._text(tok, row[width:].tolist()) for row in out.cpu()]
        rows = [{"prompt": p, "response": t} for p, t in zip(prompts, texts)]
        return collator(rows)

    @staticmethod
    def _text(tok: Any, new_ids: list[int]) -> str:
        eos = tok.eos_token_id
        if eos is not None and eos in new_ids:
            new_ids = new_ids[: new_ids.index(eos)]
        return tok.decode(new_ids, skip_special_tokens=True)
