"""Write the intersphinx inventories the documentation links against, without network.

The docs build runs where documentation sites cannot be reached, so every inventory it
uses is a file in this folder (see ``intersphinx_mapping`` in ``docs/conf.py``). They
come from two places:

* **Debian's documentation packages** ship the real ``objects.inv`` of Python, SciPy,
  Dask and Distributed. ``--debian`` downloads those packages with ``apt-get download``
  (no installation) and copies the inventory out of each.
* **Generated** for the projects without such a package (NumPy, PyTorch, POT,
  Transformers, networkx, zarr, Matplotlib, PEFT, TRL): the object names are read from
  the installed packages and each is mapped to its page by the URL scheme of the
  project's documentation (``reference/generated/numpy.argsort.html`` and so on; the
  schemes are in the functions below). Names only: no documentation text is copied.

Run from the repository root, in the environment the docs are built with::

    python docs/_inventories/make_inventories.py            # the generated ones
    python docs/_inventories/make_inventories.py --debian   # also the Debian ones

An inventory is the Sphinx "version 2" format: four header lines, then zlib-compressed
lines ``name domain:role priority uri display-name``, where a ``uri`` ending in ``$``
stands for itself followed by the name.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import shutil
import subprocess
import sys
import tempfile
import warnings
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: project -> (Debian package, path of the inventory inside it)
DEBIAN = {
    "python": ("python3.11-doc", "usr/share/doc/python3.11/html/objects.inv"),
    "scipy": ("python-scipy-doc", "usr/share/doc/python-scipy-doc/html/objects.inv"),
    "dask": ("python-dask-doc", "usr/share/doc/python-dask-doc/html/objects.inv"),
    "distributed": (
        "python-distributed-doc",
        "usr/share/doc/python-distributed-doc/html/objects.inv",
    ),
}

Entry = tuple[str, str, str]  # (name, "py:function", uri relative to the site root)


def write_inventory(path: Path, project: str, version: str, entries: Iterable[Entry]) -> int:
    """Write ``entries`` as a Sphinx inventory; returns how many were written."""
    seen: dict[tuple[str, str], str] = {}
    for name, role, uri in entries:
        seen.setdefault((name, role), uri)
    lines = []
    for (name, role), uri in sorted(seen.items()):
        if uri.endswith("#" + name):
            uri = uri[: -len(name)] + "$"
        lines.append(f"{name} {role} 1 {uri} -\n")
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    path.write_bytes(header.encode() + zlib.compress("".join(lines).encode(), 9))
    return len(lines)


def _public(module) -> Iterator[tuple[str, object]]:
    for name in sorted(getattr(module, "__all__", None) or dir(module)):
        if name.startswith("_"):
            continue
        try:
            yield name, getattr(module, name)
        except Exception:  # lazy attributes that fail to import (optional backends)
            continue


def _role(obj) -> str | None:
    if inspect.isclass(obj):
        return "py:class"
    if callable(obj):
        return "py:function"
    return None


def _members(cls) -> Iterator[tuple[str, str]]:
    for name, obj in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(obj, property) or inspect.isdatadescriptor(obj):
            yield name, "py:attribute"
        elif callable(obj) or isinstance(obj, (staticmethod, classmethod)):
            yield name, "py:method"


def numpy_entries() -> Iterator[Entry]:
    import numpy as np

    gen = "reference/generated/"
    yield "numpy", "py:module", "reference/index.html#module-numpy"
    for mod, page in [
        ("numpy.linalg", "reference/routines.linalg.html"),
        ("numpy.random", "reference/random/index.html"),
        ("numpy.testing", "reference/routines.testing.html"),
        ("numpy.typing", "reference/typing.html"),
    ]:
        yield mod, "py:module", f"{page}#module-{mod}"
    scalars = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "bool_"}
    scalars |= {"uint8", "uint16", "uint32", "uint64", "complex64", "complex128", "generic"}
    for name, obj in _public(np):
        full = f"numpy.{name}"
        if name in scalars:
            yield full, "py:class", f"reference/arrays.scalars.html#{full}"
        elif isinstance(obj, np.ufunc):
            yield full, "py:function", f"{gen}{full}.html#{full}"
        elif (role := _role(obj)) is not None:
            yield full, role, f"{gen}{full}.html#{full}"
    for name, role in _members(np.ndarray):
        full = f"numpy.ndarray.{name}"
        yield full, role, f"{gen}{full}.html#{full}"
    for sub in ("linalg", "testing"):
        for name, obj in _public(importlib.import_module(f"numpy.{sub}")):
            if (role := _role(obj)) is not None:
                full = f"numpy.{sub}.{name}"
                yield full, role, f"{gen}{full}.html#{full}"
    rng = "reference/random/generator.html"
    yield "numpy.random.Generator", "py:class", f"{rng}#numpy.random.Generator"
    yield "numpy.random.default_rng", "py:function", f"{rng}#numpy.random.default_rng"
    for name, role in _members(np.random.Generator):
        full = f"numpy.random.Generator.{name}"
        yield full, role, f"reference/random/generated/{full}.html#{full}"
    for name in ("ArrayLike", "DTypeLike", "NDArray"):
        yield f"numpy.typing.{name}", "py:data", f"reference/typing.html#numpy.typing.{name}"


def torch_entries() -> Iterator[Entry]:
    import torch
    import torch.nn.functional as F

    gen = "generated/"
    modules = {
        "torch": "torch.html",
        "torch.nn": "nn.html",
        "torch.nn.functional": "nn.functional.html",
        "torch.autograd": "autograd.html",
        "torch.distributed": "distributed.html",
        "torch.utils.data": "data.html",
        "torch.cuda": "cuda.html",
        "torch.linalg": "linalg.html",
        "torch.optim": "optim.html",
        "torch.compiler": "torch.compiler.html",
    }
    for mod, page in modules.items():
        yield mod, "py:module", f"{page}#module-{mod}"
    for name, obj in _public(torch):
        if inspect.ismodule(obj) or name in {"Tensor", "dtype", "device", "Generator"}:
            continue
        if (role := _role(obj)) is not None:
            yield f"torch.{name}", role, f"{gen}torch.{name}.html#torch.{name}"
    yield "torch.Tensor", "py:class", "tensors.html#torch.Tensor"
    for name, role in _members(torch.Tensor):
        yield f"torch.Tensor.{name}", role, f"{gen}torch.Tensor.{name}.html#torch.Tensor.{name}"
    for name in ("dtype", "device", "layout", "memory_format"):
        yield f"torch.{name}", "py:class", f"tensor_attributes.html#torch.{name}"
    yield "torch.Generator", "py:class", f"{gen}torch.Generator.html#torch.Generator"
    for sub in ("nn", "nn.functional", "linalg", "optim", "cuda", "autograd"):
        for name, obj in _public(importlib.import_module(f"torch.{sub}")):
            if inspect.ismodule(obj) or (role := _role(obj)) is None:
                continue
            full = f"torch.{sub}.{name}"
            yield full, role, f"{gen}{full}.html#{full}"
    for name, role in _members(torch.nn.Module):
        full = f"torch.nn.Module.{name}"
        yield full, role, f"{gen}torch.nn.Module.html#{full}"
    for name, obj in _public(F):
        if inspect.isfunction(obj) or inspect.isbuiltin(obj):
            full = f"torch.nn.functional.{name}"
            yield full, "py:function", f"{gen}{full}.html#{full}"
    yield "torch.autograd.Function", "py:class", "autograd.html#torch.autograd.Function"
    for name in ("forward", "backward", "setup_context", "apply"):
        full = f"torch.autograd.Function.{name}"
        yield full, "py:method", f"{gen}{full}.html#{full}"
    grad = "generated/torch.autograd.gradcheck.gradcheck.html"
    yield "torch.autograd.gradcheck", "py:function", f"{grad}#torch.autograd.gradcheck.gradcheck"
    import torch.distributed as dist
    import torch.utils.data as data

    for name, obj in _public(dist):
        if not inspect.ismodule(obj) and (role := _role(obj)) is not None:
            yield f"torch.distributed.{name}", role, f"distributed.html#torch.distributed.{name}"
    for name, obj in _public(data):
        if not inspect.ismodule(obj) and (role := _role(obj)) is not None:
            yield f"torch.utils.data.{name}", role, f"data.html#torch.utils.data.{name}"


def pot_entries() -> Iterator[Entry]:
    import ot

    yield "ot", "py:module", "all.html#module-ot"
    for name, obj in _public(ot):
        if not inspect.ismodule(obj) and (role := _role(obj)) is not None:
            yield f"ot.{name}", role, f"all.html#ot.{name}"
    for sub in ("gromov", "lp", "bregman", "utils", "backend", "optim", "solvers"):
        mod = importlib.import_module(f"ot.{sub}")
        page = f"gen_modules/ot.{sub}.html"
        yield f"ot.{sub}", "py:module", f"{page}#module-ot.{sub}"
        for name, obj in _public(mod):
            if not inspect.ismodule(obj) and (role := _role(obj)) is not None:
                yield f"ot.{sub}.{name}", role, f"{page}#ot.{sub}.{name}"


#: Transformers' reference pages (not generated from names: the site groups classes by topic)
TRANSFORMERS = {
    "main_classes/trainer": ["Trainer", "TrainingArguments", "Seq2SeqTrainingArguments"],
    "main_classes/callback": ["TrainerCallback", "TrainerState", "TrainerControl"],
    "main_classes/model": ["PreTrainedModel"],
    "main_classes/configuration": ["PretrainedConfig", "PreTrainedConfig"],
    "main_classes/tokenizer": [
        "PreTrainedTokenizer",
        "PreTrainedTokenizerFast",
        "PreTrainedTokenizerBase",
        "BatchEncoding",
    ],
    "main_classes/text_generation": ["GenerationConfig", "GenerationMixin"],
    "main_classes/data_collator": ["DataCollatorForLanguageModeling", "DataCollatorWithPadding"],
    "model_doc/auto": ["AutoConfig", "AutoModelForCausalLM", "AutoTokenizer", "AutoModel"],
    "model_doc/llama": ["LlamaConfig", "LlamaForCausalLM", "LlamaModel"],
    "model_doc/gpt2": ["GPT2Config", "GPT2LMHeadModel"],
}
METHODS = {
    "Trainer": ["train", "evaluate", "compute_loss", "training_step", "save_model", "log"],
    "PreTrainedModel": ["from_pretrained", "save_pretrained", "generate"],
    "PreTrainedTokenizerBase": ["apply_chat_template", "save_pretrained", "from_pretrained"],
}


def transformers_entries() -> Iterator[Entry]:
    yield "transformers", "py:module", "index#module-transformers"
    for page, names in TRANSFORMERS.items():
        for name in names:
            yield f"transformers.{name}", "py:class", f"{page}#transformers.{name}"
            for meth in METHODS.get(name, ()):
                full = f"transformers.{name}.{meth}"
                yield full, "py:method", f"{page}#{full}"


def networkx_entries() -> Iterator[Entry]:
    import networkx as nx

    yield "networkx", "py:module", "reference/index.html#module-networkx"
    for cls, page in [
        ("Graph", "graph"),
        ("DiGraph", "digraph"),
        ("MultiGraph", "multigraph"),
        ("MultiDiGraph", "multidigraph"),
    ]:
        yield f"networkx.{cls}", "py:class", f"reference/classes/{page}.html#networkx.{cls}"
    for name, obj in _public(nx):
        if not inspect.isfunction(obj) or not obj.__module__.startswith("networkx."):
            continue
        full = f"{obj.__module__}.{name}"
        where = "algorithms/" if obj.__module__.startswith("networkx.algorithms") else ""
        uri = f"reference/{where}generated/{full}.html#{full}"
        yield full, "py:function", uri
        yield f"networkx.{name}", "py:function", uri


def zarr_entries() -> Iterator[Entry]:
    import zarr

    yield "zarr", "py:module", "api/zarr/index.html#module-zarr"
    for name, obj in _public(zarr):
        if not inspect.ismodule(obj) and (role := _role(obj)) is not None:
            yield f"zarr.{name}", role, f"api/zarr/index.html#zarr.{name}"


def matplotlib_entries() -> Iterator[Entry]:
    import matplotlib.pyplot as plt

    yield "matplotlib", "py:module", "api/matplotlib_configuration_api.html#module-matplotlib"
    yield "matplotlib.pyplot", "py:module", "api/pyplot_summary.html#module-matplotlib.pyplot"
    for name, obj in _public(plt):
        if inspect.isfunction(obj) and obj.__module__ == "matplotlib.pyplot":
            full = f"matplotlib.pyplot.{name}"
            yield full, "py:function", f"api/_as_gen/{full}.html#{full}"
    for full, page in [
        ("matplotlib.figure.Figure", "api/figure_api.html"),
        ("matplotlib.axes.Axes", "api/axes_api.html"),
    ]:
        yield full, "py:class", f"{page}#{full}"


#: Hugging Face PEFT and TRL: the classes a fusion user meets, with their reference pages
HF_SMALL = {
    "peft": [
        ("peft.LoraConfig", "py:class", "package_reference/lora#peft.LoraConfig"),
        ("peft.PeftModel", "py:class", "package_reference/peft_model#peft.PeftModel"),
    ],
    "trl": [
        ("trl.SFTTrainer", "py:class", "sft_trainer#trl.SFTTrainer"),
        ("trl.SFTConfig", "py:class", "sft_trainer#trl.SFTConfig"),
    ],
}

GENERATED = {
    "numpy": numpy_entries,
    "torch": torch_entries,
    "pot": pot_entries,
    "transformers": transformers_entries,
    "networkx": networkx_entries,
    "zarr": zarr_entries,
    "matplotlib": matplotlib_entries,
}
DISTRIBUTIONS = {"pot": "POT"}


def _version(project: str) -> str:
    from importlib.metadata import version

    return version(DISTRIBUTIONS.get(project, project))


def generate() -> None:
    warnings.simplefilter("ignore", FutureWarning)  # deprecated aliases met while walking
    for project, entries in GENERATED.items():
        n = write_inventory(HERE / f"{project}.inv", project, _version(project), entries())
        print(f"{project}.inv: {n} objects")
    for project, entries in HF_SMALL.items():
        n = write_inventory(HERE / f"{project}.inv", project, _version(project), entries)
        print(f"{project}.inv: {n} objects")


def from_debian() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for project, (package, member) in DEBIAN.items():
            subprocess.run(["apt-get", "download", package], cwd=tmp, check=True)
            deb = next(Path(tmp).glob(f"{package}_*.deb"))
            root = Path(tmp) / package
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
            shutil.copyfile(root / member, HERE / f"{project}.inv")
            print(f"{project}.inv: from {deb.name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--debian", action="store_true", help="also extract Debian's inventories")
    args = parser.parse_args(argv)
    generate()
    if args.debian:
        from_debian()
    return 0


if __name__ == "__main__":
    sys.exit(main())
