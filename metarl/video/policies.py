"""Each method's policy after k adaptation steps, for a video (``Method.policies`` in :mod:`metarl.methods`).

A provider is ``(run_dir, config, task, steps, options) -> dict[int, PolicyFn]``.
For methods that adapt by policy-gradient steps (``maml``, ``pretrain``, ``random_init``),
:func:`gradient_adapted_params` follows the evaluation protocol of docs/design.md, "Evaluation protocol" on the one task: ``episodes_per_step``
fresh episodes per step, adapted with the run's
:class:`~metarl.algorithms.adaptation.AdaptationSettings` (the first step at the run's
inner lr, later ones at half of it), read as ``metarl evaluate`` reads them. The sampling noise of
one task alone differs from that of the 40-task evaluation, so the adapted
weights are a fresh draw of the same procedure, not the evaluation's own.
A fine-tune run is fine-tuned afresh on the task (:func:`finetune_run_policies`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from metarl.video.options import RenderOptions, envs_horizon, run_horizon
from metarl.video.rollouts import PolicyFn, gaussian_policy_fn, make_render_env

if TYPE_CHECKING:
    from metarl.algorithms.adaptation import AdaptationSettings


def gradient_adapted_params(
    policy: Any,
    params: Mapping[str, Any],
    family: str,
    task: Any,
    steps: int,
    settings: AdaptationSettings,
    *,
    episodes_per_step: int,
    seed: int,
    horizon: int | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Parameters after k = 0..steps policy-gradient steps on one task (docs/design.md,
    "Evaluation protocol"), adapted with ``settings`` as ``metarl evaluate`` adapts
    (:func:`metarl.evaluation.protocol.adaptation_settings`).

    Returns:
        ``steps + 1`` parameter dicts (module-shaped, detached, on CPU); entry k
        is the policy after k steps.
    """
    import torch

    from metarl.algorithms.adaptation import inner_step
    from metarl.core.device import resolve_device
    from metarl.core.policy import stack_params
    from metarl.core.sampler import VectorEnvSampler

    torch_device = resolve_device(device)
    policy = policy.to(torch_device)
    task_params = stack_params({n: v.detach().to(torch_device) for n, v in params.items()}, 1)
    sequence = [{n: v[0].detach().cpu() for n, v in task_params.items()}]
    if steps == 0:
        return sequence
    sampler = VectorEnvSampler(family, 1, torch_device, horizon=horizon)
    generator = torch.Generator().manual_seed(seed)
    try:
        for lr in tqdm(settings.lrs(steps), desc="adapting", unit="step", disable=not progress, leave=False):
            episodes = sampler.sample(policy, task_params, [task], episodes_per_step, generator)
            task_params = inner_step(
                policy, task_params, episodes, lr, settings.inner_objective, settings.discount,
                settings.gae_lambda, normalize_advantages=settings.normalize_advantages,
            )
            sequence.append({n: v[0].detach().cpu() for n, v in task_params.items()})
    finally:
        sampler.close()
    return sequence


def gradient_run_policies(
    run_dir: Any, config: Mapping[str, Any], task: Any, steps: Sequence[int], options: RenderOptions
) -> dict[int, PolicyFn]:
    """Policies after each k in ``steps`` of a run that adapts by policy-gradient steps.

    The run's policy (``metarl.storage.runs.load_policy``) is adapted with the run's
    settings (:func:`metarl.evaluation.protocol.adaptation_settings`), as ``metarl evaluate`` does.
    """
    from metarl.evaluation.protocol import adaptation_settings
    from metarl.storage.runs import load_policy

    policy = load_policy(run_dir, config)
    sequence = gradient_adapted_params(
        policy,
        policy.params(),
        config["family"],
        task,
        max(steps),
        adaptation_settings(config),
        episodes_per_step=options.episodes_per_step,
        seed=options.seed,
        horizon=run_horizon(config),
        device=options.device,
        progress=options.progress,
    )
    policy = policy.to("cpu")
    import gymnasium as gym

    import metarl_envs as envs

    action_space = gym.make(envs.env_id(config["family"])).action_space
    return {
        k: gaussian_policy_fn(
            policy, sequence[k], deterministic=options.deterministic, seed=options.seed + k,
            action_space=action_space,
        )
        for k in steps
    }


def finetune_run_policies(
    run_dir: Any, config: Mapping[str, Any], task: Any, steps: Sequence[int], options: RenderOptions
) -> dict[int, PolicyFn]:
    """Policies of a fine-tune (stable-baselines3) run after k budget chunks of fine-tuning.

    A fresh copy of the pretrained model gets the run's recipe (freeze, new
    head, learning rate) and is fine-tuned on the task for ``max(steps)``
    chunks of ``episodes_per_step`` episodes (:func:`metarl.algorithms.finetune.adapt.prepare_finetune`,
    as its evaluation does); the weights after each requested k are kept and
    rebuilt as separate policies.
    """
    import torch

    from metarl.algorithms import finetune
    from metarl.core.device import resolve_device

    run_config, spec, state = finetune.load_run(run_dir.path)
    num_steps = max(steps)
    recipe = dataclasses.replace(
        run_config.recipe, episodes_per_step=options.episodes_per_step, num_steps=max(num_steps, 1)
    )
    device = resolve_device(options.device)
    chunk = recipe.episodes_per_step * envs_horizon(spec.family)
    states: dict[int, dict[str, Any]] = {}
    bar = tqdm(total=num_steps * chunk, desc=f"fine-tuning {spec.algo} ({num_steps} x {chunk} steps)",
               unit="step", disable=not options.progress, leave=False)
    with finetune.isolated_global_rng(options.seed), bar:
        model, venv = finetune.prepare_finetune(spec, state, task, recipe, options.seed, device)
        try:
            for k in range(num_steps + 1):
                if k > 0:
                    model.learn(total_timesteps=chunk, reset_num_timesteps=False, callback=finetune.StepProgress(bar))
                if k in steps:
                    states[k] = finetune.model_state(model, venv)
        finally:
            venv.close()
    box = make_render_env(spec.family).action_space
    low, high = np.asarray(box.low, np.float64), np.asarray(box.high, np.float64)
    policies = {}
    for k, weights in states.items():
        model_k, normalizer = finetune.load_policy(spec, weights, device)
        generator = (
            None if options.deterministic else torch.Generator().manual_seed(options.seed + k)
        )

        def act(
            obs: np.ndarray, model=model_k, normalizer=normalizer, generator=generator
        ) -> np.ndarray:
            batch = np.asarray(obs, dtype=np.float64)[None]  # [1, obs_dim]
            if normalizer is not None:
                batch = normalizer.normalize_obs(batch)
            obs_t = torch.as_tensor(batch, dtype=torch.float32, device=model.device)
            action = finetune.policy_actions(model, obs_t, generator).cpu().numpy()  # [1, act_dim]
            return finetune.rescale_action(action, low, high)[0]

        policies[k] = act
    return policies
