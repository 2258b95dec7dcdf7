"""The whole fusion pipeline on tiny models, offline: ``python -m fusion demo`` and ``study``.

1. Data (:mod:`~fusion.demo.data`): items from :mod:`fusion.eval.tasks` (``coin_flip``, and
   ``multistep_arithmetic`` sized for tiny models) with chain-of-thought targets from its
   exact solvers, as the two prompts Zero-shot-CoT sends.
2. Two teachers (:mod:`~fusion.demo.models`, random init, different tokenizers), each
   trained on one family.
3. Both teachers' top-k cached with :func:`fusion.cache.build` over the pivot's data.
4. A pivot (its own tokenizer) trained with :class:`fusion.FusionTrainer` three ways
   (:class:`~fusion.demo.models.Arm`), same warm start and data order per seed: SFT;
   SFT + ULD; SFT + ULD + GLD.
5. Every model evaluated with :func:`fusion.eval.evaluate` (Zero-shot-CoT, paper and
   robust cleansing) on held-out items.
6. Tables, CSV files, a PNG plot and a reading of the numbers (:mod:`~fusion.demo.report`).

Each step is a job (:mod:`~fusion.demo.jobs`) run once by :mod:`~fusion.demo.runner`, in
parallel and resumably. :mod:`fusion.demo.study` runs many such pivots over the regimes
where distillation could matter and compares the arms with paired statistics
(:mod:`~fusion.demo.stats`). The presets are :class:`~fusion.demo.config.DemoConfig`'s
``full()``, ``quick()`` and ``tiny()``.
"""

from fusion.demo.config import TASKS, DemoConfig, ModelSize, TokenizerSpec
from fusion.demo.data import (
    DataSpec,
    arithmetic_item,
    coin_flip_item,
    make_items,
    reasoning_examples,
    sft_examples,
)
from fusion.demo.models import Arm, ModelId, Role
from fusion.demo.pipeline import DemoJobs, DemoResult, demo_jobs, run_demo
from fusion.demo.report import Row, format_table, reading, summarise, summarise_rows

__all__ = [
    "TASKS",
    "Arm",
    "DataSpec",
    "DemoConfig",
    "DemoJobs",
    "DemoResult",
    "ModelId",
    "ModelSize",
    "Role",
    "Row",
    "TokenizerSpec",
    "arithmetic_item",
    "coin_flip_item",
    "demo_jobs",
    "format_table",
    "main",
    "make_items",
    "reading",
    "reasoning_examples",
    "run_demo",
    "sft_examples",
    "summarise",
    "summarise_rows",
]


def main(argv=None) -> int:
    """``python -m fusion demo ...`` (see :func:`fusion.demo.cli.demo_main`)."""
    from fusion.demo.cli import demo_main

    return demo_main(argv)
