r"""Teachers for fusion training: cached top-k, or a model run in the training step.

A teacher gives, for every example, its top-``k`` predictions of each response token in
its *own* tokenisation: ``TopK(logprobs, indices)`` of shape ``(T_j, k)`` with
``logprobs = log_softmax(z / tau)``. :class:`fusion.cache.TeacherCache` reads them from
disk (computed once by :func:`fusion.cache.build`); :class:`OnlineTeacher` computes them
on the fly, under ``torch.no_grad``, from a loaded Hugging Face model with any tokenizer.
Both follow the same tokenisation rule (:class:`fusion.cache.Encoder`) and the same
next-token alignment, so a cache and the same teacher run online give the same rows.

:func:`resolve_teacher` turns what a user passes (a cache directory, a model directory,
a loaded model, or either object) into one of the two; :func:`split_teachers` validates
``[(teacher, weight), ...]`` lists.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from fusion.cache import Encoder, TeacherCache, default_max_length, target_logits, topk_rows
from fusion.modules import check_teacher_weights
from fusion.types import TopK

__all__ = [
    "OnlineInputs",
    "OnlineTeacher",
    "Teacher",
    "resolve_teacher",
    "split_teachers",
]


class OnlineInputs(NamedTuple):
    """A batch as an online teacher sees it (its own tokens, right padded).

    Attributes
    ----------
    input_ids, attention_mask : long tensors ``(B, L)``
    predicting : bool tensor ``(B, L)``
        The positions whose logits predict a target token (the position before each
        target: the response of a pair, the assistant turns of a conversation).
    num_targets : long tensor ``(B,)``
        Target tokens per example (0 when truncation left none).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    predicting: torch.Tensor
    num_targets: torch.Tensor


class OnlineTeacher:
    r"""A causal LM run inside the training step, in place of a teacher cache.

    Every batch is tokenised with the teacher's own tokenizer by the rule of
    :func:`fusion.cache.build` (:class:`fusion.cache.Encoder`), run through the model
    under ``torch.no_grad`` in evaluation mode (its parameters are frozen with
    ``requires_grad_(False)``), and reduced on the fly to the top-``k``
    of :math:`\log\mathrm{softmax}(z/\tau)` at each response position: exactly the rows a
    cache of the same teacher holds (up to the cache's fp16/bf16 rounding, which
    ``logprobs_dtype`` reproduces).

    Parameters
    ----------
    model : transformers.PreTrainedModel, str or path-like
        A loaded causal LM, used in the dtype it was loaded in, or a checkpoint directory
        (loaded by :func:`fusion.models.load_causal_lm`, ``dtype="auto"``).
    tokenizer : transformers.PreTrainedTokenizerBase, str or path-like, optional
        The teacher's tokenizer; by default loaded from the checkpoint (the model's
        ``name_or_path`` for a loaded model).
    max_length : int, optional
        Longest teacher input (default: the model's maximum position count).
    add_eos : bool
        Without a chat template, append EOS after the response (as caches do).
    truncation : {"response", "prompt_left"}
        How a too long input is cut (:class:`fusion.cache.Encoder`), as for a cache.
    response_only_head : bool
        Apply the model's LM head to the predicting positions only (Hugging Face's
        boolean ``logits_to_keep``), as ``fusion.cache.build(..., response_only_head=True)``
        does: the teacher's full ``(B, L, V)`` logits are never formed.
    logprobs_dtype : torch.dtype, optional
        Round the log-probabilities to this dtype (``torch.float16`` reproduces a
        default cache bit for bit); by default they stay fp32.
    name : str, optional
        Shown in messages and ``repr``.
    gguf_file : str or path-like, optional
        Load the teacher from a GGUF file (absolute, or relative to ``model``, which may
        then be ``None``), de-quantised once and cached by :func:`fusion.models.load_causal_lm`.
    cache_dir : str or path-like, optional
        Where that de-quantised copy is kept (default :func:`fusion.models.default_cache_dir`).

    Examples
    --------
    >>> from fusion.teachers import OnlineTeacher                       # doctest: +SKIP
    >>> teacher = OnlineTeacher("ckpt/teacher-a")                       # doctest: +SKIP
    >>> FusionTrainer(pivot, args, teachers=[(teacher, 0.5), ("cache/teacher-b", 0.5)],
    ...               train_dataset="train.jsonl", processing_class=tok)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        max_length: int | None = None,
        add_eos: bool = True,
        truncation: str = "response",
        response_only_head: bool = False,
        logprobs_dtype: torch.dtype | None = None,
        name: str | None = None,
        gguf_file: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        from transformers import AutoTokenizer

        from fusion.models import load_causal_lm, resolve_source

        if gguf_file is not None:
            source = resolve_source(model, gguf_file=gguf_file, cache_dir=cache_dir)
            name = name or str(source.gguf_file)
            model = source.path
        if isinstance(model, str | os.PathLike):
            path = Path(model)
            if not (path / "config.json").is_file():
                raise FileNotFoundError(
                    f"teacher model directory not found (no config.json): {path}"
                )
            name = name or str(path)
            model = load_causal_lm(path, dtype="auto")
            tokenizer = tokenizer or path
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"an online teacher must be a model or its directory, got {model!r}")
        if tokenizer is None:
            source = getattr(model, "name_or_path", "")
            if not source or not Path(source).is_dir():
                raise ValueError(
                    "pass the teacher's tokenizer: OnlineTeacher(model, tokenizer) (the model "
                    "was not loaded from a local directory that holds one)"
                )
            tokenizer = source
        if isinstance(tokenizer, str | os.PathLike):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        if logprobs_dtype is not None and not logprobs_dtype.is_floating_point:
            raise ValueError(f"logprobs_dtype must be a floating dtype, got {logprobs_dtype}")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name or getattr(model, "name_or_path", "") or type(model).__name__
        limit = max_length if max_length is not None else default_max_length(model, tokenizer)
        self.encoder = Encoder(tokenizer, max_length=limit, add_eos=add_eos, truncation=truncation)
        self.response_only_head = bool(response_only_head)
        self.logprobs_dtype = logprobs_dtype
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)

    @property
    def vocab_size(self) -> int:
        """Width of the teacher's logits (the range of its ids)."""
        head = self.model.get_output_embeddings()
        weight = getattr(head, "weight", None)
        return int(weight.shape[0]) if weight is not None else int(self.model.config.vocab_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, examples: Sequence[Any]) -> OnlineInputs:
        """Tokenise examples (pairs, conversations or rows) for the teacher, right padded."""
        encoded = self.encoder.encode(list(examples))
        length = max(1, max(len(e.input_ids) for e in encoded))
        ids = torch.full((len(encoded), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), length), dtype=torch.long)
        predicting = torch.zeros((len(encoded), length), dtype=torch.bool)
        for b, e in enumerate(encoded):
            ids[b, : len(e.input_ids)] = torch.tensor(e.input_ids, dtype=torch.long)
            mask[b, : len(e.input_ids)] = 1
            # next-token alignment: the logits at position t - 1 predict the token at t
            for lo, hi in e.spans:
                predicting[b, lo - 1 : hi - 1] = True
        targets = torch.tensor([e.num_targets for e in encoded], dtype=torch.long)
        return OnlineInputs(ids, mask, predicting, targets)

    def topk(
        self, inputs: OnlineInputs, k: int, temperature: float = 1.0
    ) -> tuple[TopK, torch.Tensor]:
        r"""The teacher's top-``k`` per target token, padded to a batch.

        Parameters
        ----------
        inputs : OnlineInputs
            From :meth:`encode` (moved to the teacher's device here).
        k : int
            Entries per position, ``1 <= k <= vocab_size``.
        temperature : float
            :math:`\tau` of :math:`\log\mathrm{softmax}(z/\tau)`.

        Returns
        -------
        topk : fusion.TopK
            ``(B, T, k)`` logprobs (fp32, or ``logprobs_dtype``) and int64 indices, row
            ``t`` of example ``b`` predicting its ``t``-th target token.
        mask : bool tensor ``(B, T)``
            Real rows; ``T`` is the most targets of any example of the batch.
        """
        # the cache builder's own selection and reduction: online rows are cache rows
        if not 1 <= k <= self.vocab_size:
            raise ValueError(f"k must be in [1, {self.vocab_size}] for teacher {self.name}")
        device = self.device
        ids, attention, predicting, counts = (x.to(device) for x in inputs)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), torch.autocast(device.type, enabled=False):
                rows = target_logits(
                    self.model, ids, attention, predicting, self.vocab_size, self.response_only_head
                )
                values, indices = topk_rows(rows, k, float(temperature))
        finally:
            self.model.train(was_training)
        batch, width = ids.shape[0], max(1, int(counts.max()))
        mask = torch.arange(width, device=device)[None] < counts[:, None]
        dtype = self.logprobs_dtype or values.dtype
        logprobs = torch.zeros((batch, width, k), dtype=dtype, device=device)
        padded = torch.zeros((batch, width, k), dtype=torch.long, device=device)
        logprobs[mask], padded[mask] = values.to(dtype), indices  # row-major, as selected
        return TopK(logprobs, padded), mask

    def __repr__(self) -> str:
        return f"OnlineTeacher({self.name!r}, vocab_size={self.vocab_size})"


Teacher = TeacherCache | OnlineTeacher


def resolve_teacher(spec: Any) -> Teacher:
    """A :class:`~fusion.cache.TeacherCache` or an :class:`OnlineTeacher` from a user's spec.

    Parameters
    ----------
    spec : TeacherCache, OnlineTeacher, torch.nn.Module, str or path-like
        A directory holding ``manifest.json`` is a cache, one holding ``config.json`` a
        model (run online), a ``.gguf`` file a model run online after a one-time
        de-quantisation (:func:`fusion.models.load_causal_lm`); a loaded model runs online
        with the tokenizer saved next to it (use :class:`OnlineTeacher` to pass a tokenizer).

    Raises
    ------
    FileNotFoundError
        For a path that is neither.
    TypeError
        For anything else.
    """
    if isinstance(spec, TeacherCache | OnlineTeacher):
        return spec
    if isinstance(spec, torch.nn.Module):
        return OnlineTeacher(spec)
    if isinstance(spec, str | os.PathLike):
        path = Path(spec)
        if (path / "manifest.json").is_file():
            return TeacherCache(path)
        if (path / "config.json").is_file():
            return OnlineTeacher(path)
        if path.suffix == ".gguf" and path.is_file():
            return OnlineTeacher(None, gguf_file=path)
        raise FileNotFoundError(
            f"teacher not found: {path} is neither a teacher cache (manifest.json), a model "
            "directory (config.json) nor a GGUF file"
        )
    raise TypeError(
        "a teacher is a cache directory, a model directory, a loaded model, a TeacherCache or "
        f"an OnlineTeacher; got {type(spec).__name__}"
    )


def split_teachers(entries: Iterable[Any]) -> tuple[list[Teacher], tuple[float, ...] | None]:
    """Teachers and their weights from ``[(teacher, weight), ...]`` (or bare teachers).

    Either every weight is ``None`` (or every entry bare): uniform weights, returned as
    ``None``; or every weight is a finite number >= 0. A mix is refused rather than
    guessed, and so are negative, non-finite and all-zero weights.
    """
    teachers, weights = [], []
    for entry in entries:
        if isinstance(entry, tuple | list):
            if len(entry) != 2:
                raise ValueError(f"a teacher entry is (teacher, weight), got {entry!r}")
            spec, weight = entry
        else:
            spec, weight = entry, None
        if spec is None:
            raise ValueError("a teacher entry has no teacher (None)")
        teachers.append(resolve_teacher(spec))
        weights.append(weight)
    if all(w is None for w in weights):
        return teachers, None
    return teachers, check_teacher_weights(weights)
