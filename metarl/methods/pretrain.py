"""The MAML paper's pretrained baseline: TRPO on the task mixture, adapted like MAML (docs/design.md, "Methods")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from metarl.methods import Method

if TYPE_CHECKING:
    from metarl.evaluation.protocol import EvalOptions
    from metarl.storage.runs import RunDir

METHOD = Method(
    name="pretrain",
    train_word="pretrain",
    summary="the MAML paper's pretrained baseline: TRPO on the task mixture, adapted like MAML",
    train_args="metarl.algorithms.pretrain_args:TrainPretrainArgs",
    train="metarl.algorithms.pretrain_args:run",
    evaluate="metarl.methods.pretrain:evaluate_pretrain_run",
    policies="metarl.video.policies:gradient_run_policies",
)


def evaluate_pretrain_run(run_dir: RunDir, config: Mapping[str, Any], options: EvalOptions,
                          progress: bool = True) -> dict[str, Any]:
    """Evaluator for ``method == "pretrain"`` (``metarl evaluate``): MAML's adaptation, unchanged."""
    from metarl.algorithms.pretrain import run_config_from_document
    from metarl.evaluation.protocol import evaluate_gradient_run

    run_config = run_config_from_document(config)  # refuses another method's or an incomplete config
    return evaluate_gradient_run(METHOD.name, run_dir, config, options, progress,
                                 extra={"pretrain_iterations": run_config.iterations})
