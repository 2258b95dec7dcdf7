"""Zero-shot-CoT evaluation (Kojima et al., 2022) of any causal LM on reasoning tasks.

The pieces, each in one module:

* :mod:`~fusion.eval.prompts`: every prompt and trigger string of the paper;
* :mod:`~fusion.eval.cleansing`: :func:`cleanse_answer` (``mode="paper"`` / ``"robust"``);
* :mod:`~fusion.eval.tasks`: :func:`generate_task` (coin flip, last letters, BBH tasks);
* :mod:`~fusion.eval.loaders`: local files of the paper's twelve datasets and of BBH;
* :mod:`~fusion.eval.runner`: :func:`evaluate` and :class:`EvalResult`;
* :mod:`~fusion.eval.models`: :class:`HFModel`, batched greedy generation (imports torch and
  transformers only when instantiated, so plain callables work without them);
* :mod:`~fusion.eval.cli`: ``python -m fusion.eval``.

References
----------
- T. Kojima, S. S. Gu, M. Reid, Y. Matsuo, Y. Iwasawa, "Large Language Models are
  Zero-Shot Reasoners", NeurIPS 2022, arXiv:2205.11916.
"""

from fusion.eval.cleansing import MODES, cleanse_answer, is_correct
from fusion.eval.loaders import DATASETS, load_bbh, load_dataset
from fusion.eval.models import HFModel
from fusion.eval.prompts import COT_TRIGGERS, DEFAULT_COT_TRIGGER, METHODS
from fusion.eval.runner import EvalResult, Record, evaluate
from fusion.eval.spec import TASKS
from fusion.eval.tasks import GENERATORS, generate_task

__all__ = [
    "COT_TRIGGERS",
    "DATASETS",
    "DEFAULT_COT_TRIGGER",
    "GENERATORS",
    "METHODS",
    "MODES",
    "TASKS",
    "EvalResult",
    "HFModel",
    "Record",
    "cleanse_answer",
    "evaluate",
    "generate_task",
    "is_correct",
    "load_bbh",
    "load_dataset",
]
