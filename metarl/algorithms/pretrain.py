"""The MAML paper's "pretrained" baseline: TRPO on the task mixture, adapted like MAML at evaluation.

The same Gaussian MLP policy as MAML (:mod:`metarl.core.policy`) is trained on the
*mixture* of train tasks by the outer algorithm alone, with no inner loop:
each iteration draws ``meta_batch_size`` train tasks, samples episodes of
every task with the one shared parameter set (:class:`~metarl.core.sampler.VectorEnvSampler`),
fits the linear feature baseline per task, and takes one TRPO step
(:mod:`metarl.algorithms.trust_region`: conjugate gradient on Fisher-vector products of
the mean KL, step to the trust-region boundary, backtracking line search that
checks improvement of the surrogate and the exact KL bound). At evaluation
the policy is adapted with exactly MAML's inner steps, learning rates and
budget (:func:`metarl.evaluation.protocol.evaluate_gradient_adaptation`, unchanged).

Choices, written down:

- **Configuration.** A pretrain run takes the MAML preset of the same name
  (:func:`metarl.algorithms.presets.maml_preset`): iterations, tasks per iteration,
  episodes, horizon, architecture, ``max_kl``, CG and line-search settings,
  discount and GAE λ for training; ``inner_lr`` and ``inner_objective`` only
  for the adaptation at evaluation. ``config.json`` has the same layout as a
  MAML run's (``maml`` block included), with ``method: pretrain``.
- **Budget.** Per iteration a MAML run samples ``inner_steps + 1`` batches of
  ``episodes_per_task`` episodes per task (support, query). The pretrained
  baseline samples the same number of episodes per task in one batch, so both
  see the same environment steps per iteration and in total.
- **Surrogate.** ``mean_i mean_t[π_θ(a|s) / π_old(a|s) · A_t]`` with per-task
  normalised advantages (linear baseline, GAE), under
  ``mean_i mean_t KL(π_old || π_θ) ≤ max_kl``: TRPO as in rllab, averaged
  over tasks the way MAML's outer loss is.
- **Resume.** A checkpoint holds the policy, the task generator's state and
  the sampling generator's state; ``--resume`` continues exactly as the
  uninterrupted run (CPU). Ctrl-C saves the last completed iteration.

References: Finn, Abbeel, Levine 2017 (MAML, the "pretrained" comparison);
Schulman et al. 2015 (TRPO); Duan et al. 2016 (rllab).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import metarl_envs as envs
from metarl.algorithms.adaptation import estimate_advantages, masked_mean
from metarl.algorithms.presets import MAMLRunConfig, initial_policy
from metarl.algorithms.trust_region import (
    backtracking_line_search,
    flatten,
    hessian_vector_product_fn,
    trust_region_step,
    unflatten,
)
from metarl.core.device import resolve_device
from metarl.core.episodes import Episodes
from metarl.core.interrupts import sigterm_as_interrupt
from metarl.core.policy import (
    GaussianMLPPolicy,
    gaussian_kl,
    gaussian_log_prob,
    policy_forward,
    stack_params,
)
from metarl.core.sampler import VectorEnvSampler
from metarl.core.validation import check_int
from metarl.storage.checkpoint import (
    check_compatible,
    generator_state,
    load_checkpoint,
    read_float,
    read_generator,
    read_int,
    restore_numpy_generator,
)
from metarl.storage.runs import (
    IterationState,
    RunDir,
    RunDirError,
    check_batch_memory,
    gradient_run_document,
    load_policy_weights,
    policy_tensors,
    writing_run,
)
from metarl.training.loop import IterationTrainer, LoopOptions, resumed_state, train_loop

METHOD = "pretrain"
_TASK_STREAM = 0x9E7A  # child stream of the run seed for the training tasks
_SAMPLING_STREAM = 0x5A9F  # child stream for actions and env resets
_RUN_FIELDS = tuple(f.name for f in dataclasses.fields(MAMLRunConfig))


def episodes_per_iteration(run_config: MAMLRunConfig) -> int:
    """Episodes per task per iteration: as many as MAML's support + query batches."""
    return run_config.episodes_per_task * (run_config.maml.inner_steps + 1)


def trpo_update(policy: GaussianMLPPolicy, episodes: Episodes, run_config: MAMLRunConfig) -> dict[str, float]:
    """One TRPO step of the shared parameters on episodes of several tasks (in place).

    Args:
        policy: the policy; its parameters change in place (under no_grad).
        episodes: ``[tasks, episodes, H, ...]`` sampled with the current parameters.
        run_config: ``maml.trpo`` (``max_kl``, ``cg_iters``, ``cg_damping``, line search),
            ``maml.discount``, ``gae_lambda``, ``normalize_advantages``.

    Returns:
        ``loss/`` and ``train/`` metrics of the step.
    """
    config = run_config.maml
    device = next(policy.parameters()).device
    dtype = next(policy.parameters()).dtype
    episodes = dataclasses.replace(
        episodes, observations=episodes.observations.to(device, dtype), actions=episodes.actions.to(device, dtype),
        rewards=episodes.rewards.to(device, dtype), mask=episodes.mask.to(device, dtype),
    )
    advantages = estimate_advantages(episodes, config.discount, config.gae_lambda,
                                     config.normalize_advantages)  # [T, E, H]
    names = [name for name, _ in policy.named_parameters()]
    params = [p for _, p in policy.named_parameters()]
    with torch.no_grad():
        old_mean, old_log_std = policy(episodes.observations)  # [T, E, H, A], [A]
        old_log_std = old_log_std.detach().clone()  # forward returns the parameter itself
        old_log_probs = gaussian_log_prob(old_mean, old_log_std, episodes.actions)  # [T, E, H]

    def surrogate_and_kl(values: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = policy_forward(policy, dict(zip(names, values, strict=True)), episodes.observations)
        ratio = torch.exp(gaussian_log_prob(mean, log_std, episodes.actions) - old_log_probs)  # [T, E, H]
        surrogate = masked_mean(ratio * advantages, episodes.mask).mean()
        kl = masked_mean(gaussian_kl(old_mean, old_log_std, mean, log_std), episodes.mask).mean()
        return surrogate, kl

    surrogate, _ = surrogate_and_kl(params)
    gradient = flatten(torch.autograd.grad(surrogate, params))
    _, kl = surrogate_and_kl(params)
    kl_gradient = torch.autograd.grad(kl, params, create_graph=True)
    fisher_product = hessian_vector_product_fn(kl_gradient, params, damping=config.trpo.cg_damping)
    step = trust_region_step(gradient, fisher_product, config.trpo.max_kl, config.trpo.cg_iters)
    start = [p.detach().clone() for p in params]
    step_parts = unflatten(step.step, params)

    def evaluate(fraction: float) -> tuple[float, float]:
        with torch.no_grad():
            candidate = [s + fraction * d for s, d in zip(start, step_parts, strict=True)]
            value, divergence = surrogate_and_kl(candidate)
        return float(value), float(divergence)

    search = backtracking_line_search(evaluate, float(surrogate.detach()), config.trpo.max_kl,
                                      config.trpo.line_search_backtrack, config.trpo.line_search_steps)
    with torch.no_grad():
        for parameter, origin, direction in zip(params, start, step_parts, strict=True):
            parameter.copy_(origin + search.step_fraction * direction)
    return {
        "loss/surrogate_before": float(surrogate.detach()),
        "loss/surrogate_after": search.objective,
        "loss/kl": search.kl,
        "train/line_search_accepted": float(search.accepted),
        "train/step_fraction": search.step_fraction,
    }


def config_document(run_config: MAMLRunConfig, seed: int, device: str, preset: str | None) -> dict[str, Any]:
    """``config.json`` of a pretrain run (the MAML run layout, ``method: pretrain``)."""
    return gradient_run_document(run_config, METHOD, seed, device, preset)


def run_config_from_document(document: Mapping[str, Any]) -> MAMLRunConfig:
    """The run configuration stored in a pretrain run's ``config.json``; refuses other methods."""
    if document.get("method") != METHOD:
        raise RunDirError(
            f"this run directory holds a {document.get('method')!r} run, not a {METHOD!r} run; "
            f"use the loader of method {document.get('method')!r}"
        )
    try:
        return MAMLRunConfig.from_dict({name: document[name] for name in _RUN_FIELDS})
    except (KeyError, TypeError) as error:
        raise RunDirError(f"config.json of this pretrain run is incomplete ({error!r})") from None


def _payload(policy: GaussianMLPPolicy, state: IterationState, family: str) -> tuple[dict, dict]:
    tensors = {**{k: v.detach().cpu().clone() for k, v in policy_tensors(policy).items()},
               "rng.sampling": generator_state(state.sampling_generator)}
    metadata = {"method": METHOD, "family": family, "obs_dim": policy.obs_dim, "act_dim": policy.act_dim,
                "iteration": state.iteration, "env_steps": state.env_steps, "train_seconds": state.train_seconds,
                "rng_tasks": state.task_rng.bit_generator.state}
    return tensors, metadata


def _restore(path: Path, policy: GaussianMLPPolicy, family: str) -> IterationState:
    tensors, metadata = load_checkpoint(path)
    check_compatible(metadata, family, policy.obs_dim, policy.act_dim, path)
    if metadata.get("method") != METHOD:
        raise RunDirError(f"checkpoint {path} belongs to a {metadata.get('method')!r} run, not a pretrain run")
    load_policy_weights(policy, tensors, path)
    sampling_generator = read_generator(tensors, "rng.sampling", path)
    return IterationState(read_int(metadata, "iteration", path),
                          restore_numpy_generator(metadata.get("rng_tasks"), path, "rng_tasks"),
                          sampling_generator, read_int(metadata, "env_steps", path),
                          read_float(metadata, "train_seconds", path))


def pretrain_iteration(policy: GaussianMLPPolicy, sampler: VectorEnvSampler, run_config: MAMLRunConfig,
                       state: IterationState) -> dict[str, float]:
    """Draw train tasks, sample with the shared parameters, one TRPO step; returns metrics."""
    start = time.perf_counter()
    tasks = envs.distribution(run_config.family).sample(run_config.meta_batch_size, "train", state.task_rng)
    shared = stack_params({k: v.detach() for k, v in policy.params().items()}, len(tasks))
    episodes = sampler.sample(policy, shared, tasks, episodes_per_iteration(run_config), state.sampling_generator)
    sample_seconds = time.perf_counter() - start
    metrics = {"train/return": float(episodes.returns.mean())}
    metrics.update(trpo_update(policy, episodes, run_config))
    state.env_steps += episodes.num_steps
    seconds = time.perf_counter() - start
    state.train_seconds += seconds
    metrics.update({"train/env_steps": float(state.env_steps), "time/sample_s": sample_seconds,
                    "time/iteration_s": seconds, "time/total_s": state.train_seconds})
    return metrics


def _postfix(metrics: Mapping[str, float]) -> dict[str, str]:
    return {"ret": f"{metrics['train/return']:.1f}"}


def train_pretrain(run_config: MAMLRunConfig, out: str | Path, *, seed: int = 0, device: str = "auto",
                   preset: str | None = None, resume: bool = False, progress: bool = True,
                   allow_large: bool = False) -> RunDir:
    """Train the pretrained baseline into ``out`` (see the module docstring).

    The directory is locked while it is written; SIGTERM is handled as Ctrl-C. The
    iterations run in :func:`metarl.training.loop.train_loop`.

    Raises:
        ValueError / RunDirError / CheckpointError: bad input, before anything is written.
        KeyboardInterrupt: after saving a checkpoint of the last completed iteration.
    """
    check_int("seed", seed, 0)
    check_batch_memory(run_config, allow_large, batches=run_config.maml.inner_steps + 1)
    torch_device = resolve_device(device)
    document = config_document(run_config, seed, device, preset)
    options = LoopOptions(iterations=run_config.iterations, desc=f"pretrain {run_config.family}",
                          checkpoint_every=run_config.checkpoint_every, progress=progress, tensorboard=True,
                          postfix=_postfix)
    with writing_run(out, document, resume) as run_dir, sigterm_as_interrupt():
        policy = initial_policy(run_config, seed)
        state = resumed_state(run_dir, resume, run_config.iterations,
                              IterationState.fresh(seed, _TASK_STREAM, _SAMPLING_STREAM),
                              lambda path: _restore(path, policy, run_config.family))
        policy = policy.to(torch_device)
        sampler = VectorEnvSampler(run_config.family, run_config.meta_batch_size, torch_device, seed,
                                   horizon=run_config.horizon)
        try:
            run_dir.write_config(document)
            trainer = IterationTrainer(state, lambda progress: pretrain_iteration(policy, sampler, run_config, progress),
                                       lambda progress: _payload(policy, progress, run_config.family))
            train_loop(run_dir, trainer, options)
        finally:
            sampler.close()
    return run_dir

