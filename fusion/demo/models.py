"""Which model a result belongs to, and how the demo's tokenizers and models are built.

:class:`ModelId` names every model of a run by typed fields (its role, its teacher name
or its pivot :class:`Arm`), so tables, files and comparisons never parse strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from fusion.demo.config import ModelSize, TokenizerSpec

__all__ = ["Arm", "ModelId", "Role", "build_tokenizer", "new_model"]


class Arm(str, Enum):
    """A way of training the pivot: its loss.

    ``SFT`` is cross-entropy on the responses; ``ULD`` adds the teachers' ULD term
    (``lambda_ > 0, beta = 0``); ``GLD`` adds ULD and GLD (``lambda_ > 0, beta > 0``).
    """

    SFT = "SFT"
    ULD = "SFT+ULD"
    GLD = "SFT+ULD+GLD"

    @property
    def uses_teachers(self) -> bool:
        """Whether the loss reads the teacher caches."""
        return self is not Arm.SFT

    @property
    def uses_gld(self) -> bool:
        """Whether the loss has a GLD term."""
        return self is Arm.GLD


class Role(str, Enum):
    """What a model is in a run."""

    BASELINE = "baseline"
    TEACHER = "teacher"
    PIVOT = "pivot"


@dataclass(frozen=True)
class ModelId:
    """One model of a run.

    Attributes
    ----------
    role : Role
    name : str
        The teacher's name (``"coin"``, ``"arith"``); empty otherwise.
    arm : Arm or None
        The pivot's loss; ``None`` for teachers and the baseline.
    tokenizer : str
        The tokenizer's label (:attr:`TokenizerSpec.label`), shown with teachers.
    """

    role: Role
    name: str = ""
    arm: Arm | None = None
    tokenizer: str = ""

    @classmethod
    def baseline(cls) -> ModelId:
        """The trivial reference: always the most frequent training answer."""
        return cls(Role.BASELINE)

    @classmethod
    def teacher(cls, name: str, tokenizer: str = "") -> ModelId:
        """A teacher, by name."""
        return cls(Role.TEACHER, name=name, tokenizer=tokenizer)

    @classmethod
    def pivot(cls, arm: Arm) -> ModelId:
        """A pivot trained with ``arm``'s loss."""
        return cls(Role.PIVOT, arm=Arm(arm))

    @property
    def label(self) -> str:
        """The column header: ``"majority answer"``, ``"teacher-coin (BPE 1000)"``,
        ``"pivot SFT+ULD"``."""
        if self.role is Role.BASELINE:
            return "majority answer"
        if self.role is Role.TEACHER:
            return f"teacher-{self.name}" + (f" ({self.tokenizer})" if self.tokenizer else "")
        return f"pivot {self.arm.value}"

    def sort_key(self) -> tuple[int, str, int]:
        """Table order: the baseline, the teachers (by name), then the arms in order."""
        arms = list(Arm)
        return (
            list(Role).index(self.role),
            self.name,
            arms.index(self.arm) if self.arm is not None else -1,
        )

    def __str__(self) -> str:
        return self.label


def build_tokenizer(spec: TokenizerSpec, corpus: Sequence[str]) -> Any:
    """A :mod:`fusion.tiny` tokenizer as ``spec`` says, trained on ``corpus``.

    Parameters
    ----------
    spec : TokenizerSpec
    corpus : sequence of str
        All texts; ``spec.corpus == "odd"`` keeps every other one.

    Returns
    -------
    transformers.PreTrainedTokenizerFast
    """
    from fusion.tiny import bpe_tokenizer, char_tokenizer

    spec.check()
    texts = list(corpus)[1::2] if spec.corpus == "odd" else list(corpus)
    if spec.kind == "char":
        return char_tokenizer(texts)
    return bpe_tokenizer(texts, vocab_size=spec.vocab)


def new_model(tokenizer: Any, size: ModelSize, seed: int) -> Any:
    """A randomly initialised causal LM without dropout (see :func:`fusion.tiny.tiny_causal_lm`).

    Fresh synthetic data never repeats enough to overfit in these budgets; dropout would
    only slow learning (and each step) down.
    """
    import torch

    from fusion.tiny import tiny_causal_lm

    model = tiny_causal_lm(
        tokenizer,
        arch=size.arch,
        n_layer=size.n_layer,
        d_model=size.d_model,
        n_head=size.n_head,
        max_positions=size.max_positions,
        seed=seed,
    )
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model
