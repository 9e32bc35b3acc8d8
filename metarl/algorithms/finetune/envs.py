"""The task-mixture env, its vector env and the observation normalisation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

import metarl_envs as envs
from metarl.algorithms.finetune.config import _OBS_MEAN, _OBS_VAR, ModelSpec
from metarl.algorithms.finetune.rollout import rescale_action
from metarl_envs.tasks import Task


class TaskMixtureEnv(gym.Wrapper):
    """A suite env that starts every episode on a new task.

    Each ``reset`` draws the episode's task from ``rng``: a fresh task of
    ``split`` from the family's distribution, or (when ``tasks`` is given) one
    of ``tasks`` uniformly; a single task makes a fixed-task env for
    fine-tuning. The action space is [-1, 1]^act_dim, rescaled onto the env's
    box. ``info["task"]`` holds the episode's task after ``reset``.

    Args:
        family: a task family name (``envs.FAMILIES``).
        rng: the generator every task draw comes from.
        split: the split fresh tasks are drawn from (when ``tasks`` is None).
        tasks: a fixed pool of tasks to draw from instead.
    """

    def __init__(
        self,
        family: str,
        rng: np.random.Generator,
        split: str = "train",
        tasks: Sequence[Task] | None = None,
    ) -> None:
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        super().__init__(gym.make(envs.env_id(family)))
        self.family = family
        self._distribution = envs.distribution(family)
        if tasks is None and split not in self._distribution.splits:
            raise ValueError(f"{family} has no split {split!r}; available: {self._distribution.splits}")
        if tasks is not None and len(tasks) == 0:
            raise ValueError("tasks must hold at least one task (or be None to draw fresh ones)")
        self._rng, self._split = rng, split
        self._tasks = list(tasks) if tasks is not None else None
        box = self.env.action_space
        if not isinstance(box, gym.spaces.Box):
            raise ValueError(f"{family} has a non-Box action space {box}; fine-tuning needs a Box")
        self._low, self._high = box.low.astype(np.float64), box.high.astype(np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=box.shape, dtype=np.float32)

    def draw_task(self) -> Task:
        """The task of the next episode (consumes the generator)."""
        if self._tasks is not None:
            return self._tasks[int(self._rng.integers(len(self._tasks)))]
        return self._distribution.sample(1, self._split, self._rng)[0]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if options:
            raise ValueError(f"TaskMixtureEnv.reset takes no options (it draws the task), got {options}")
        task = self.draw_task()
        obs, info = self.env.reset(seed=seed, options={"task": task})
        return obs, {**info, "task": task}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        return self.env.step(rescale_action(action, self._low, self._high))


def make_vec_env(
    spec: ModelSpec, num_envs: int, rng: np.random.Generator, split: str = "train",
    tasks: Sequence[Task] | None = None,
) -> DummyVecEnv:
    """``num_envs`` :class:`TaskMixtureEnv` copies, each with its own child of ``rng``."""
    children = rng.spawn(num_envs)
    return DummyVecEnv([
        (lambda child=child: TaskMixtureEnv(spec.family, child, split=split, tasks=tasks))
        for child in children
    ])


def wrap_normalization(spec: ModelSpec, venv: VecEnv, training: bool,
                       statistics: dict[str, torch.Tensor] | None = None) -> VecEnv:
    """Add SB3's observation normalisation when ``spec.normalize_obs`` (rewards untouched).

    With ``statistics`` (mean and var tensors) the running statistics are
    restored; ``training=False`` freezes them.
    """
    if not spec.normalize_obs:
        return venv
    wrapped = VecNormalize(venv, training=training, norm_obs=True, norm_reward=False,
                           clip_obs=spec.obs_clip, epsilon=spec.obs_epsilon)
    if statistics is not None:
        wrapped.obs_rms.mean = statistics[_OBS_MEAN].double().numpy().copy()
        wrapped.obs_rms.var = statistics[_OBS_VAR].double().numpy().copy()
        wrapped.obs_rms.count = spec.obs_count
    return wrapped
