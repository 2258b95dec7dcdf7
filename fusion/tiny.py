"""Tiny tokenizers and randomly initialised causal LMs, built offline.

Tests, examples and ``python -m fusion demo`` need real Hugging Face objects
(a ``PreTrainedTokenizerFast`` and a ``PreTrainedModel``) but nothing may be
downloaded. This module is the one place that builds them from scratch: a
character-level tokenizer, a byte-pair-encoding tokenizer trained with the
``tokenizers`` library on a caller-supplied corpus, and a small GPT-2 or Llama
model from a config.
"""

from __future__ import annotations

from collections.abc import Iterable

SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
}


def _wrap(tok, model_max_length: int):
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=model_max_length, **SPECIAL_TOKENS
    )
    fast.padding_side = "left"  # left padding is what batched generation needs
    return fast


def char_tokenizer(corpus: Iterable[str], *, model_max_length: int = 1024):
    """Character-level tokenizer whose vocabulary is the characters of ``corpus``.

    Parameters
    ----------
    corpus : iterable of str
        Texts whose characters make up the vocabulary (plus the special tokens
        ``<pad> <s> </s> <unk>``; unknown characters map to ``<unk>``).
    model_max_length : int
        Longest sequence the tokenizer will produce when truncating.

    Returns
    -------
    transformers.PreTrainedTokenizerFast
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    chars = sorted({c for text in corpus for c in text})
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS.values())}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return _wrap(tok, model_max_length)


def bpe_tokenizer(corpus: Iterable[str], *, vocab_size: int = 300, model_max_length: int = 1024):
    """Byte-level BPE tokenizer trained on ``corpus`` with the ``tokenizers`` library.

    Parameters
    ----------
    corpus : iterable of str
        Training texts.
    vocab_size : int
        Target vocabulary size, special tokens and the 256 byte symbols included.
    model_max_length : int
        Longest sequence the tokenizer will produce when truncating.

    Returns
    -------
    transformers.PreTrainedTokenizerFast
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return _wrap(tok, model_max_length)


def tiny_causal_lm(
    tokenizer,
    *,
    arch: str = "gpt2",
    n_layer: int = 2,
    d_model: int = 64,
    n_head: int = 4,
    max_positions: int = 512,
    seed: int = 0,
):
    """A randomly initialised causal LM sized for CPU tests.

    Parameters
    ----------
    tokenizer : PreTrainedTokenizerBase
        Supplies the vocabulary size and the special token ids.
    arch : {"gpt2", "llama"}
        Model family.
    n_layer, d_model, n_head, max_positions : int
        Architecture sizes.
    seed : int
        Seed of the random initialisation (``torch.manual_seed``).

    Returns
    -------
    transformers.PreTrainedModel
        In evaluation mode, float32, on the CPU.
    """
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if arch == "gpt2":
        config = GPT2Config(
            n_layer=n_layer, n_embd=d_model, n_head=n_head, n_positions=max_positions, **ids
        )
    elif arch == "llama":
        config = LlamaConfig(
            num_hidden_layers=n_layer,
            hidden_size=d_model,
            intermediate_size=4 * d_model,
            num_attention_heads=n_head,
            num_key_value_heads=n_head,
            max_position_embeddings=max_positions,
            **ids,
        )
    else:
        raise ValueError(f"arch must be 'gpt2' or 'llama', got {arch!r}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()
