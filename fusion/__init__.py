"""fusion: Graph-on-Logits Distillation and the pieces around it for fusing LLMs.

Submodules are imported lazily so that ``import fusion`` (and ``fusion.eval`` with a
plain callable model) works without importing torch or transformers up front.
"""

from __future__ import annotations

import importlib

from fusion.types import StudentTopK, TopK

__version__ = "0.2.0"

# public name -> module that defines it
_LAZY = {
    "GLDLoss": "fusion.modules",
    "ULDLoss": "fusion.modules",
    "JSDLoss": "fusion.modules",
    "FusionLoss": "fusion.modules",
    "gld_loss": "fusion.functional",
    "uld_loss": "fusion.functional",
    "jsd_loss": "fusion.functional",
    "FusionTrainer": "fusion.training",
    "OnlineTeacher": "fusion.teachers",
    "FusionSFTTrainer": "fusion.trl",
}

__all__ = ["StudentTopK", "TopK", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fusion' has no attribute {name!r}")
