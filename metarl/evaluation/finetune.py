"""Evaluating a fine-tune run: fine-tune a fresh copy on each evaluation task (``metarl evaluate``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from metarl.algorithms.finetune.adapt import finetune_on_task
from metarl.algorithms.finetune.config import METHOD, FinetuneRecipe, ModelSpec
from metarl.algorithms.finetune.model import (
    flops_per_forward,
    parameter_count,
)
from metarl.algorithms.finetune.training import load_run
from metarl.core.device import resolve_device
from metarl.core.policy import GaussianMLPPolicy
from metarl.evaluation.protocol import (
    AdaptationResult,
    EvalOptions,
    evaluated_checkpoint,
    options_tasks,
    returns_document,
    write_eval_json,
)
from metarl.storage.runs import RunDir
from metarl_envs.tasks import Task


def evaluate_tasks(
    spec: ModelSpec, state: dict[str, torch.Tensor], tasks: Sequence[Task], recipe: FinetuneRecipe,
    seed: int, device: torch.device, progress: bool = True,
) -> AdaptationResult:
    """Fine-tune a fresh copy on each task (task ``i`` seeded from ``(seed, i)``); returns ``[tasks, K+1]``."""
    results = []
    bar = tqdm(list(tasks), desc=f"fine-tune {spec.algo} {spec.family}", disable=not progress, leave=False)
    for index, task in enumerate(bar):
        task_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        results.append(finetune_on_task(spec, state, task, recipe, task_seed, device))
        bar.set_postfix(k0=f"{results[-1].returns[0]:.1f}", last=f"{results[-1].returns[-1]:.1f}")
    returns = np.array([r.returns for r in results])  # [tasks, num_steps + 1]
    samples = sum(r.samples_per_step for r in results)  # per budget chunk, summed over tasks (as MAML's)
    seconds = sum(r.adapt_seconds for r in results)
    return AdaptationResult(list(tasks), returns, samples, seconds, [recipe.learning_rate] * recipe.num_steps)


def evaluate_finetune_run(run_dir: RunDir, config: dict[str, Any], options: EvalOptions,
                          progress: bool = True) -> dict[str, Any]:
    """Evaluator for ``method == "finetune"`` runs (``metarl evaluate``); writes ``eval_<split>.json``.

    The evaluation tasks, episodes per step and number of steps are the
    protocol's (:mod:`metarl.evaluation.protocol`); the recipe (freeze, new head, lr)
    is the run's. ``inner_lrs`` in the document are the fine-tuning Adam
    learning rates; ``params`` and ``flops_per_forward`` count the acting
    policy network (not the critic).
    """
    if options.steps < 1:
        raise ValueError(f"steps must be >= 1 for a fine-tune run (budget chunks), got {options.steps}")
    if options.samples_per_step is not None:
        raise ValueError("--samples-per-step is for runs adapted by gradient steps (maml, pretrain, random_init); "
                         "a fine-tune run's budget is --episodes-per-step episodes per chunk")
    run_config, spec, state = load_run(run_dir.path)
    trained = evaluated_checkpoint(run_dir)  # the training checkpoint's progress (the weights come from policy)
    recipe = dataclasses.replace(run_config.recipe, episodes_per_step=options.episodes_per_step,
                                 num_steps=options.steps)
    torch.set_num_threads(1)  # small networks; threads only add contention
    tasks = options_tasks(spec.family, options)
    result = evaluate_tasks(spec, state, tasks, recipe, options.seed, resolve_device(options.device), progress)
    # returns_document counts parameters from a GaussianMLPPolicy: give it PPO's actor architecture (the
    # same MLP + state-independent log-std), and override the counts with the SB3 actor's own below.
    same_shape = GaussianMLPPolicy(spec.obs_dim, spec.act_dim, spec.hidden_sizes)
    extra = {"algo": spec.algo, "recipe": dataclasses.asdict(recipe), "pretrain_timesteps": run_config.pretrain_steps,
             "params": parameter_count(spec), "flops_per_forward": flops_per_forward(spec),
             "macs_per_forward": flops_per_forward(spec) // 2}
    document = returns_document(METHOD, spec.family, options, result, same_shape, extra=extra, progress=progress,
                                trained=trained).to_json()
    write_eval_json(run_dir, document)
    return document
