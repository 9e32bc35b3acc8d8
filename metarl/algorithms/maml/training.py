"""MAML meta-training (``metarl train maml``, ``metarl.train_maml``) on a task family.

One meta-iteration (docs/design.md, "Algorithms"), run by the one training loop
(:func:`metarl.training.loop.train_loop`):

1. draw ``meta_batch_size`` train tasks from the task stream;
2. for each inner step ``j``: sample support episodes of every task with the
   parameters after ``j`` inner steps (``j = 0``: the meta-parameters);
3. adapt (``MAMLLearner.adapted_params``) and sample the query episodes with
   the adapted parameters;
4. one outer update (``MAMLLearner.meta_update``: TRPO or ProMP);
5. the loop logs its ``train/``, ``adapt/``, ``loss/``, ``time/`` metrics to metrics.csv
   and TensorBoard and checkpoints every ``checkpoint_every`` iterations and at the end.

Randomness comes from the run seed only: the policy initialisation (torch's
global RNG, forked and seeded, so the caller's state is untouched), the task
stream (a numpy Generator) and the sampling stream (a CPU torch.Generator that
also seeds the env resets). A checkpoint stores all of their states and the
learner's own state, so ``--resume`` continues exactly as the uninterrupted
run would (bit-exact on CPU). Ctrl-C saves the state as of the last completed
iteration, then exits.

Bad input (unknown family, invalid hyperparameters, a run directory of another
run, a corrupted checkpoint or one of another env) is refused before anything
in the run directory is written.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import metarl_envs as envs
from metarl.algorithms.maml.learner import MAMLLearner
from metarl.algorithms.presets import MAMLRunConfig, initial_policy
from metarl.cluster.backends import SamplerChoice
from metarl.core.device import resolve_device
from metarl.core.interrupts import sigterm_as_interrupt
from metarl.core.policy import GaussianMLPPolicy, stack_params
from metarl.core.sampler import Sampler
from metarl.core.validation import check_int
from metarl.storage.checkpoint import (
    CheckpointError,
    check_compatible,
    flatten_state,
    generator_state,
    load_checkpoint,
    read_float,
    read_generator,
    read_int,
    restore_numpy_generator,
    restore_tensor_dict,
)
from metarl.storage.runs import (
    IterationState,
    RunDir,
    RunDirError,
    check_batch_memory,
    gradient_run_document,
    load_policy_weights,
    policy_tensors,
    read_metrics,
    writing_run,
)
from metarl.training.loop import IterationTrainer, LoopOptions, resumed_state, train_loop

TASK_STREAM = 0x7A5C  # child stream of the run seed for the training tasks
SAMPLING_STREAM = 0x5A3F  # child stream for actions and env resets
_RUN_FIELDS = tuple(f.name for f in dataclasses.fields(MAMLRunConfig))


@dataclasses.dataclass
class TrainResult:
    """What :func:`train_maml` returns."""

    run_dir: RunDir
    policy: GaussianMLPPolicy
    iterations: int
    history: list[dict[str, float]]
    seconds: float


def config_document(run_config: MAMLRunConfig, seed: int, device: str, preset: str | None) -> dict[str, Any]:
    """``config.json`` of a MAML run: the run config plus method, seed, device and policy block."""
    document = gradient_run_document(run_config, "maml", seed, device, preset)
    document["metarl_version"] = importlib.metadata.version("metarl")
    return document


def run_config_from_document(document: dict[str, Any]) -> MAMLRunConfig:
    """Rebuild the :class:`MAMLRunConfig` stored in a ``config.json``."""
    try:
        return MAMLRunConfig.from_dict({name: document[name] for name in _RUN_FIELDS})
    except (KeyError, TypeError) as error:
        raise RunDirError(f"config.json of this run is incomplete or from another version ({error!r})") from None


def checkpoint_payload(
    policy: GaussianMLPPolicy, learner: MAMLLearner, state: IterationState, family: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a checkpoint of the current state (copied, safe to keep)."""
    learner_tensors, learner_tree = flatten_state(learner.state_dict(), "learner.")
    tensors = {
        **{name: value.detach().cpu().clone() for name, value in policy_tensors(policy).items()},
        **{name: value.detach().cpu().clone() for name, value in learner_tensors.items()},
        "rng.sampling": generator_state(state.sampling_generator),
    }
    metadata = {
        "method": "maml",
        "family": family,
        "obs_dim": policy.obs_dim,
        "act_dim": policy.act_dim,
        "iteration": state.iteration,
        "env_steps": state.env_steps,
        "train_seconds": state.train_seconds,
        "rng_tasks": state.task_rng.bit_generator.state,
        "learner_state": learner_tree,
    }
    return tensors, metadata


def restore_checkpoint(
    path: Path, policy: GaussianMLPPolicy, learner: MAMLLearner, family: str
) -> IterationState:
    """Load ``path`` into ``policy`` and ``learner``; return the saved :class:`IterationState`.

    Every metadata field is checked by type and range (:class:`CheckpointError` naming it).
    """
    tensors, metadata = load_checkpoint(path)
    check_compatible(metadata, family, policy.obs_dim, policy.act_dim, path)
    if metadata.get("method") != "maml":
        raise RunDirError(f"checkpoint {path} belongs to a {metadata.get('method')!r} run, not a MAML run")
    load_policy_weights(policy, tensors, path)
    learner_state = restore_tensor_dict(tensors, metadata.get("learner_state"), path, "learner_state")
    try:
        learner.load_state_dict(learner_state)
    except (ValueError, KeyError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint {path}: metadata field 'learner_state' does not fit this run ({error})") from None
    sampling_generator = read_generator(tensors, "rng.sampling", path)
    return IterationState(
        iteration=read_int(metadata, "iteration", path),
        task_rng=restore_numpy_generator(metadata.get("rng_tasks"), path, "rng_tasks"),
        sampling_generator=sampling_generator,
        env_steps=read_int(metadata, "env_steps", path),
        train_seconds=read_float(metadata, "train_seconds", path),
    )


def meta_iteration(
    policy: GaussianMLPPolicy,
    learner: MAMLLearner,
    sampler: Sampler,
    run_config: MAMLRunConfig,
    state: IterationState,
) -> dict[str, float]:
    """One meta-iteration (sample support, adapt, sample query, outer update); returns its metrics."""
    start = time.perf_counter()
    distribution = envs.distribution(run_config.family)
    tasks = distribution.sample(run_config.meta_batch_size, "train", state.task_rng)
    episodes_per_task = run_config.episodes_per_task
    sample_seconds = env_seconds = 0.0
    metrics: dict[str, float] = {}

    support = []
    task_params = stack_params({k: v.detach() for k, v in policy.params().items()}, len(tasks))
    for step in range(run_config.maml.inner_steps):
        if step > 0:
            task_params = learner.adapted_params(support)
        episodes = sampler.sample(policy, task_params, tasks, episodes_per_task, state.sampling_generator)
        sample_seconds += sampler.last_seconds
        env_seconds += sampler.last_env_seconds
        support.append(episodes)
        metrics[f"adapt/return_k{step}"] = float(episodes.returns.mean())
    adapted = learner.adapted_params(support)
    query = sampler.sample(policy, adapted, tasks, episodes_per_task, state.sampling_generator)
    sample_seconds += sampler.last_seconds
    env_seconds += sampler.last_env_seconds
    k = run_config.maml.inner_steps
    metrics[f"adapt/return_k{k}"] = float(query.returns.mean())

    update_start = time.perf_counter()
    update_metrics = learner.meta_update(support, query)
    update_seconds = time.perf_counter() - update_start

    state.env_steps += sum(e.num_steps for e in support) + query.num_steps
    iteration_seconds = time.perf_counter() - start
    state.train_seconds += iteration_seconds
    metrics.update(
        {
            "train/return_before_adaptation": metrics["adapt/return_k0"],
            "train/return_after_adaptation": metrics[f"adapt/return_k{k}"],
            "adapt/return_gain": metrics[f"adapt/return_k{k}"] - metrics["adapt/return_k0"],
            "train/env_steps": float(state.env_steps),
            "time/sample_s": sample_seconds,
            "time/env_s": env_seconds,
            "time/outside_env_share": 1.0 - env_seconds / max(iteration_seconds, 1e-12),
            "time/update_s": update_seconds,
            "time/iteration_s": iteration_seconds,
            "time/total_s": state.train_seconds,
        }
    )
    for key, value in update_metrics.items():
        metrics.setdefault(key, float(value))
    return metrics


def _postfix(metrics: Mapping[str, float]) -> dict[str, str]:
    return {"before": f"{metrics['train/return_before_adaptation']:.1f}",
            "after": f"{metrics['train/return_after_adaptation']:.1f}"}


def train_maml(
    run_config: MAMLRunConfig,
    out: Path | str,
    *,
    seed: int = 0,
    device: str = "auto",
    preset: str | None = None,
    resume: bool = False,
    progress: bool = True,
    tensorboard: bool = True,
    sampler: SamplerChoice | None = None,
    allow_large: bool = False,
) -> TrainResult:
    """Meta-train with MAML into the run directory ``out`` (see the module docstring).

    ``sampler`` picks where episodes are collected (default: in this process); every
    backend returns the same episodes, so it is recorded in ``config.json`` but may
    change on ``--resume``. The directory is locked while the run writes it
    (:func:`metarl.storage.runs.writing_run`); SIGTERM is handled as Ctrl-C
    (:func:`metarl.core.interrupts.sigterm_as_interrupt`).

    Raises:
        ValueError / RunDirError / CheckpointError: bad input, before anything is written
            (a meta-batch above half the machine's memory unless ``allow_large``).
        KeyboardInterrupt: after saving a checkpoint of the last completed iteration
            (:class:`metarl.core.interrupts.Terminated` on SIGTERM).
    """
    check_int("seed", seed, 0)
    check_batch_memory(run_config, allow_large)
    torch_device = resolve_device(device)
    sampler_choice = SamplerChoice() if sampler is None else sampler
    document = config_document(run_config, seed, device, preset)
    document["sampler"] = sampler_choice.to_dict()
    options = LoopOptions(iterations=run_config.iterations, desc=f"maml {run_config.family}",
                          checkpoint_every=run_config.checkpoint_every, progress=progress,
                          tensorboard=tensorboard, postfix=_postfix)
    with writing_run(out, document, resume) as run_dir, sigterm_as_interrupt():
        policy = initial_policy(run_config, seed).to(torch_device)
        learner = MAMLLearner(policy, run_config.maml, torch_device)
        state = resumed_state(
            run_dir, resume, run_config.iterations, IterationState.fresh(seed, TASK_STREAM, SAMPLING_STREAM),
            lambda path: restore_checkpoint(path, policy, learner, run_config.family),
        )
        # Started before anything is written: a missing Ray or too small a cluster writes nothing.
        sampler_backend = sampler_choice.build(
            run_config.family, run_config.meta_batch_size, torch_device, seed, run_config.horizon
        )
        try:  # everything is validated: from here on the run directory is written
            run_dir.write_config(document)
            start = time.perf_counter()
            trainer = IterationTrainer(
                state, lambda progress: meta_iteration(policy, learner, sampler_backend, run_config, progress),
                lambda progress: checkpoint_payload(policy, learner, progress, run_config.family),
            )
            train_loop(run_dir, trainer, options)
            seconds = time.perf_counter() - start
        finally:
            sampler_backend.close()
    return TrainResult(run_dir, policy, state.iteration, read_metrics(run_dir.metrics_path), seconds)
