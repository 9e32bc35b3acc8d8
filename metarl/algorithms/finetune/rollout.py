"""Acting with a fine-tune model and measuring its returns (the evaluation rollouts)."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecNormalize

import metarl_envs as envs
from metarl.algorithms.finetune.config import ModelSpec
from metarl_envs.tasks import Task


def rescale_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map ``action  # [..., act_dim]`` from [-1, 1] affinely onto the box [low, high] (clipped first).

    The ``clip_then_rescale`` kind of :class:`metarl.core.policy.ActionMap`.
    """
    from metarl.core.policy import clip_then_rescale  # here: this function moves whole

    return clip_then_rescale(action, low, high)


def policy_actions(model: BaseAlgorithm, obs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Actions in [-1, 1] for ``obs  # [batch, obs_dim]`` (already normalised).

    With a generator the action is sampled from the policy's distribution
    (PPO: Gaussian, clipped to [-1, 1] as SB3 does; SAC: tanh-squashed
    Gaussian); without one it is the deterministic (mean) action.
    Returns ``[batch, act_dim]``.
    """
    with torch.no_grad():
        if isinstance(model, PPO):
            distribution = model.policy.get_distribution(obs).distribution
            mean, std = distribution.mean, distribution.stddev  # [batch, act_dim]
            if generator is None:
                return mean.clamp(-1.0, 1.0)
            noise = torch.randn(mean.shape, generator=generator).to(mean.device)
            return (mean + std * noise).clamp(-1.0, 1.0)
        if isinstance(model, SAC):
            mean, log_std, _ = model.actor.get_action_dist_params(obs)  # [batch, act_dim] each
            if generator is None:
                return torch.tanh(mean)
            noise = torch.randn(mean.shape, generator=generator).to(mean.device)
            return torch.tanh(mean + log_std.exp() * noise)
    raise ValueError(f"unsupported model type {type(model).__name__}; supported: PPO, SAC")


def rollout_returns(
    model: BaseAlgorithm, spec: ModelSpec, tasks: Sequence[Task], episodes: int,
    generator: torch.Generator, normalizer: VecNormalize | None = None,
) -> np.ndarray:
    """Undiscounted returns of ``episodes`` stochastic episodes on each task.

    Runs all ``len(tasks) * episodes`` episodes at once in the family's batched
    vector env (one policy forward per step). Reset seeds and action noise come
    from ``generator``. Returns ``[len(tasks), episodes]``.
    """
    from metarl.core.policy import ActionMap  # here: this function moves whole
    from metarl.core.rollout import Rollout, draw_seed

    tasks = list(tasks)
    horizon = envs.family_spec(spec.family).horizon
    num = len(tasks) * episodes
    vector_env = gym.make_vec(envs.env_id(spec.family), num_envs=num, vectorization_mode="vector_entry_point")
    try:
        action_map = ActionMap.from_space(vector_env.single_action_space, kind="clip_then_rescale")
        vector_env.set_tasks([task for task in tasks for _ in range(episodes)])
        device = model.device

        def act(t: int, obs: np.ndarray) -> np.ndarray:
            if normalizer is not None:
                obs = normalizer.normalize_obs(obs)
            obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=device)  # [num, obs_dim]
            return policy_actions(model, obs_t, generator).cpu().numpy()  # [num, act_dim]

        returns = np.zeros(num)
        for step in Rollout(vector_env, act, action_map, draw_seed(generator), horizon):
            returns += np.where(step.alive, step.rewards, 0.0)
    finally:
        vector_env.close()
    return returns.reshape(len(tasks), episodes)
