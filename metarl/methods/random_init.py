"""Random initialisation: an untrained policy adapted like MAML (docs/design.md, "Methods").

The run directory (``config.json`` and the seeded initial weights) is written by
:mod:`metarl.algorithms.random_init`; :func:`evaluate_random_init_run` evaluates it
with the evaluation protocol of every gradient-adapted run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from metarl.methods import Method

if TYPE_CHECKING:
    from metarl.evaluation.protocol import EvalOptions
    from metarl.storage.runs import RunDir

METHOD = Method(
    name="random_init",
    train_word="random-init",
    summary="create a random-initialisation baseline run (adapted at evaluation like MAML)",
    train_args="metarl.algorithms.random_init:RandomInitArgs",
    train="metarl.algorithms.random_init:run",
    evaluate="metarl.methods.random_init:evaluate_random_init_run",
    policies="metarl.video.policies:gradient_run_policies",
    resumable=False,
)


def evaluate_random_init_run(run_dir: RunDir, config: Mapping[str, Any], options: EvalOptions,
                             progress: bool = True) -> dict[str, Any]:
    """Evaluator for ``method == "random_init"`` (``metarl evaluate``): docs/design.md, "Evaluation protocol"."""
    from metarl.evaluation.protocol import evaluate_gradient_run

    return evaluate_gradient_run(METHOD.name, run_dir, config, options, progress)
