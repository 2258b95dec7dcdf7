"""Batched greedy generation with a Hugging Face causal LM.

torch and transformers are imported when an :class:`HFModel` is built, never at module
import, so that :mod:`fusion.eval` works with plain callables on machines without them.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

from fusion.eval.prompts import MAX_NEW_TOKENS_ANSWER, chat_turns

DEFAULT_BATCH_SIZE = 64
"""Prompts per ``generate`` call by default: on a 2-core CPU, a 135M-parameter model reads
its weights once per decoding step for the whole batch, so larger batches score more items
per minute (``benchmarks/bench_eval_speed.py``), while the key-value cache stays small."""


class HFModel:
    """A causal LM as a prompt-to-completion callable with batched greedy decoding.

    Parameters
    ----------
    path_or_model : str, path-like, transformers.PreTrainedModel or None
        A local directory written by ``save_pretrained`` (or a hub id already in the local
        cache), a model object, or (with ``gguf_file``) the folder holding the GGUF file
        or ``None``.
    tokenizer : str, path-like or transformers.PreTrainedTokenizerBase, optional
        Defaults to the tokenizer saved next to the model (or in the GGUF file); required
        when ``path_or_model`` is an object.
    device : str or torch.device, optional
        Where to run. Default: ``"cuda"`` when available, else ``"cpu"``, for a path; the
        model's current device for an object.
    dtype : str or torch.dtype, optional
        Weight dtype when loading from a path (e.g. ``"bfloat16"``); default: as saved.
    batch_size : int
        Prompts per ``generate`` call in :meth:`generate_batch` (default
        :data:`fusion.eval.models.DEFAULT_BATCH_SIZE`).
    local_files_only : bool
        Never contact the hub (the default; the evaluation is meant to run offline).
    trust_remote_code : bool
        Passed to ``from_pretrained``.
    gguf_file : str or path-like, optional
        Load a GGUF file, de-quantised once and cached (:func:`fusion.models.load_causal_lm`).
    cache_dir : str or path-like, optional
        Where the de-quantised copy of ``gguf_file`` is kept
        (default :func:`fusion.models.default_cache_dir`).
    chat_template : bool
        Wrap each prompt in the tokenizer's chat template: the question as the user's
        message, the rest of the paper's prompt as the start of the assistant's turn
        (:func:`fusion.eval.prompts.chat_turns`; zero-shot methods only).

    Notes
    -----
    Prompts are sorted by length, cut into batches of ``batch_size`` and left-padded, with
    an attention mask (the tokenizer object is not modified; a tokenizer without a pad
    token is copied and given its EOS token as pad). Decoding is greedy (``do_sample=False``,
    one beam) with the key-value cache, under ``torch.inference_mode``; each row stops at
    EOS or ``max_new_tokens``, with no stop strings, as the paper's ``stop=None`` API calls
    (a finished row is padded until the batch's last row finishes). Batched decoding gives
    the completions of one-prompt-at-a-time decoding (tested on tiny models and on
    SmolLM2), up to floating-point ties between the two largest logits. Completions are decoded without
    special tokens and without whitespace clean-up, so the text is pasted back verbatim in
    the second Zero-shot-CoT stage.

    References
    ----------
    - T. Kojima et al., "Large Language Models are Zero-Shot Reasoners", NeurIPS 2022.
    - T. Wolf et al., "Transformers: State-of-the-Art Natural Language Processing",
      EMNLP 2020 (system demonstrations).
    """

    def __init__(
        self,
        path_or_model: str | os.PathLike[str] | Any,
        tokenizer: str | os.PathLike[str] | Any | None = None,
        *,
        device: str | Any | None = None,
        dtype: str | Any | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        local_files_only: bool = True,
        trust_remote_code: bool = False,
        gguf_file: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        chat_template: bool = False,
    ) -> None:
        import torch

        from fusion.models import load_causal_lm, resolve_source

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.chat_template = bool(chat_template)
        hub = {"local_files_only": local_files_only, "trust_remote_code": trust_remote_code}
        if gguf_file is not None or isinstance(path_or_model, (str, os.PathLike)):
            source = resolve_source(path_or_model, gguf_file=gguf_file, cache_dir=cache_dir)
            model = load_causal_lm(source.path, dtype=dtype, **hub)
            tokenizer = source.path if tokenizer is None else tokenizer
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        else:
            model = path_or_model
            if tokenizer is None:
                raise ValueError("a tokenizer is required when passing a model object")
        if device is not None:
            model = model.to(device)
        self.model = model.eval()
        self.tokenizer = _prepare_tokenizer(tokenizer, hub)
        if self.chat_template and not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("chat_template=True, but the tokenizer has no chat template")

    def render(self, prompt: str) -> str:
        """The text the model reads for ``prompt``: itself, or its chat-template form.

        With ``chat_template=True``, :func:`~fusion.eval.prompts.chat_turns` splits the
        prompt; the question becomes the user message (after the template's default
        system message, if it has one) and the rest follows the generation prompt.
        """
        if not self.chat_template:
            return prompt
        question, rest = chat_turns(prompt)
        head = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        return head + rest

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        """Number of tokens of each prompt as the model reads it (after :meth:`render`)."""
        if not prompts:
            return []
        texts = [self.render(p) for p in prompts]
        encoded = self.tokenizer(texts, add_special_tokens=not self.chat_template)
        return [len(ids) for ids in encoded["input_ids"]]

    @property
    def context_length(self) -> int | None:
        """Longest sequence the model's position embeddings allow, if it declares one."""
        config = self.model.config
        for name in ("max_position_embeddings", "n_positions"):
            value = getattr(config, name, None)
            if isinstance(value, int):
                return value
        return None

    def __call__(self, prompt: str, max_new_tokens: int = MAX_NEW_TOKENS_ANSWER) -> str:
        """Greedy completion of one prompt (the continuation only)."""
        return self.generate_batch([prompt], max_new_tokens=max_new_tokens)[0]

    def generate_batch(self, prompts: Sequence[str], *, max_new_tokens: int) -> list[str]:
        """Greedy completions of several prompts, in input order.

        Parameters
        ----------
        prompts : sequence of str
            Prompts; they are sorted by length internally so that each batch pads little.
        max_new_tokens : int
            Generation budget per prompt (the paper: 128 for reasoning, 32 for answers).

        Returns
        -------
        list of str
            The generated continuations, without the prompts.

        Raises
        ------
        ValueError
            If ``max_new_tokens < 1`` or a prompt plus the budget exceeds the model's
            context length.
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
            raise ValueError(f"max_new_tokens must be an integer, got {max_new_tokens!r}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        lengths = self.count_tokens(list(prompts))
        self._check_fits(lengths, max_new_tokens)
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        outputs: list[str] = [""] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            texts = self._generate([prompts[i] for i in chunk], max_new_tokens)
            for i, text in zip(chunk, texts):
                outputs[i] = text
        return outputs

    def _check_fits(self, lengths: list[int], max_new_tokens: int) -> None:
        limit = self.context_length
        if limit is not None and lengths and max(lengths) + max_new_tokens > limit:
            raise ValueError(
                f"a prompt of {max(lengths)} tokens plus {max_new_tokens} new tokens exceeds "
                f"the model's context length of {limit}"
            )

    def _generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        import torch
        from transformers import GenerationConfig

        tok = self.tokenizer
        enc = tok(
            [self.render(p) for p in prompts],
            return_tensors="pt",
            padding=True,
            padding_side="left",
            # the chat template writes its special tokens itself
            add_special_tokens=not self.chat_template,
        )
        enc = {k: v.to(self.model.device) for k, v in enc.items()}
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            use_cache=True,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=config)
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        return tok.batch_decode(
            new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )


def _prepare_tokenizer(tokenizer: Any, hub: dict[str, bool]) -> Any:
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer, **hub)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with")
        # Copy rather than mutate the caller's tokenizer.
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
