"""Fine-tuning a fresh copy of the pretrained model on one task (the baseline's adaptation)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

import metarl_envs as envs
from metarl.algorithms.finetune.config import _SEED_LIMIT, FinetuneRecipe, ModelSpec
from metarl.algorithms.finetune.envs import make_vec_env, wrap_normalization
from metarl.algorithms.finetune.model import (
    apply_recipe,
    build_model,
    isolated_global_rng,
    load_model_state,
)
from metarl.algorithms.finetune.registry import adapter
from metarl.algorithms.finetune.rollout import rollout_returns
from metarl_envs.tasks import Task


@dataclasses.dataclass
class TaskResult:
    """Fine-tuning on one task: returns after k = 0..num_steps chunks, samples, seconds."""

    task: Task
    returns: list[float]
    samples_per_step: int
    adapt_seconds: float


def prepare_finetune(
    spec: ModelSpec, state: dict[str, torch.Tensor], task: Task, recipe: FinetuneRecipe,
    env_seed: int, device: torch.device,
) -> tuple[BaseAlgorithm, VecEnv]:
    """A fresh copy of the pretrained model, recipe applied, on a fixed-task env of ``task``.

    Call it inside :func:`isolated_global_rng` (the fresh head and SB3 draw from
    the global generators). The env runs ``episodes_per_step`` copies of the
    task, so that one PPO rollout of ``horizon`` steps is one budget chunk.
    """
    recipe.check_against(spec)
    horizon = envs.family_spec(spec.family).horizon
    chunk = recipe.episodes_per_step * horizon
    venv = make_vec_env(spec, recipe.episodes_per_step, np.random.default_rng(env_seed), tasks=[task])
    venv.seed(env_seed % _SEED_LIMIT)
    venv = wrap_normalization(spec, venv, training=False, statistics=state)
    overrides = adapter(spec.algo).finetune_overrides(recipe, horizon, chunk)
    model = build_model(spec, venv, device, overrides=overrides)
    load_model_state(model, state)
    apply_recipe(model, spec, recipe)
    return model, venv


def finetune_on_task(
    spec: ModelSpec, state: dict[str, torch.Tensor], task: Task, recipe: FinetuneRecipe,
    seed: int, device: torch.device,
) -> TaskResult:
    """Fine-tune a fresh copy of the pretrained model on ``task``; measure returns k = 0..num_steps.

    ``seed`` determines everything random here (env resets, SB3's minibatch
    order and exploration, the fresh head, evaluation noise).
    """
    chunk = recipe.episodes_per_step * envs.family_spec(spec.family).horizon
    env_seed, sb3_seed, eval_seed = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(3))
    eval_generator = torch.Generator().manual_seed(eval_seed)
    with isolated_global_rng(sb3_seed):
        model, venv = prepare_finetune(spec, state, task, recipe, env_seed, device)
        normalizer = venv if isinstance(venv, VecNormalize) else None

        def evaluate() -> float:
            return float(rollout_returns(model, spec, [task], recipe.episodes_per_step, eval_generator,
                                         normalizer).mean())

        returns = [evaluate()]
        adapt_seconds = 0.0
        for _ in range(recipe.num_steps):
            start = time.perf_counter()
            model.learn(total_timesteps=chunk, reset_num_timesteps=False)
            adapt_seconds += time.perf_counter() - start
            returns.append(evaluate())
        venv.close()
    return TaskResult(task=task, returns=returns, samples_per_step=chunk, adapt_seconds=adapt_seconds)
