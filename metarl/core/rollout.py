"""The one rollout loop: a batched vector env stepped with a policy function.

Every place that runs policies in the suite's batched vector envs (docs/design.md,
"Batched environments and the sampler") steps them through :class:`Rollout`: the
sampler (:class:`metarl.core.sampler.VectorEnvSampler`, episodes for the trainers and
the evaluation), the fine-tuned models' evaluation
(:func:`metarl.algorithms.finetune.rollout.rollout_returns`) and the collection of
transitions for task identification (:func:`metarl.identification.contexts.collect_transitions`).

The loop owns what they share: one reset of every sub-env with one seed (sub-env ``i``
gets ``seed + i``), one call of the policy function per step for all sub-envs, the
action mapping (:class:`~metarl.core.policy.ActionMap`, which knows each caller's
convention), the time spent inside the env, and which sub-envs are still in their
first episode. Each step is handed to the caller as a :class:`Step`; the caller
records what it needs (the sampler's buffers, the fine-tune evaluation's returns,
the contexts' transitions) and may stop early with ``break``.

Two ways of ending, written down:

- ``first_episodes_only=True`` (the sampler, the fine-tune evaluation): one episode per
  sub-env. A sub-env whose episode ends early stops counting (``Step.alive`` is False
  from the next step on: gymnasium's next-step autoreset would start a second episode
  in it), and the loop stops as soon as every sub-env is done, or after ``max_steps``.
- ``first_episodes_only=False`` (context collection): the sub-envs run on through
  autoresets for ``max_steps`` steps unless the caller breaks; ``Step.resetting`` marks
  the pseudo-steps that only reset a finished sub-env.

All randomness belongs to the caller (the reset seed it passes, the generator its
policy function draws from); the loop draws nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import metarl_envs as envs
from metarl.core.policy import ActionMap
from metarl.core.validation import check_int

SEED_LIMIT = 2**31 - 1
"""Env reset seeds are drawn from ``[0, SEED_LIMIT)``."""

PolicyFunction = Callable[[int, np.ndarray], np.ndarray]
"""``act(t, observations  # [envs, obs_dim]) -> actions  # [envs, act_dim]`` in the policy's units."""


def space_dims(observation_space: gym.Space, action_space: gym.Space) -> tuple[int, int]:
    """Observation and action sizes (flattened) of a single env's spaces."""
    return int(np.prod(observation_space.shape)), int(np.prod(action_space.shape))


def env_dims(family: str) -> tuple[int, int]:
    """Observation and action sizes of ``family`` (``ValueError`` listing families if unknown)."""
    vector_env = gym.make_vec(envs.env_id(family), num_envs=1, vectorization_mode="vector_entry_point")
    try:
        return space_dims(vector_env.single_observation_space, vector_env.single_action_space)
    finally:
        vector_env.close()


def draw_seed(generator: torch.Generator) -> int:
    """A non-negative int seed drawn from ``generator`` (for env resets and numpy streams)."""
    return int(torch.randint(0, SEED_LIMIT, (1,), generator=generator).item())


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of every sub-env. The arrays are the loop's own: copy what you keep past the step."""

    t: int
    """Index of the step (0 for the first after the reset)."""
    observations: np.ndarray  # [envs, obs_dim]
    """What the policy function was called with."""
    actions: np.ndarray  # [envs, act_dim]
    """The policy function's output (the policy's units)."""
    env_actions: np.ndarray  # [envs, act_dim]
    """What the env was stepped with (``actions`` through the :class:`ActionMap`)."""
    rewards: np.ndarray  # [envs]
    next_observations: np.ndarray  # [envs, obs_dim]
    terminated: np.ndarray  # [envs] bool
    truncated: np.ndarray  # [envs] bool
    info: dict[str, Any]
    alive: np.ndarray  # [envs] bool
    """Sub-envs still in their first episode when the step was taken (their step counts)."""
    resetting: np.ndarray  # [envs] bool
    """Sub-envs whose episode ended at the previous step: this step only reset them (autoreset)."""


class Rollout:
    """Iterate over the steps of ``vector_env`` driven by ``act`` (see the module docstring).

    Args:
        vector_env: a batched vector env with its tasks already set.
        act: the policy function, called once per step with the observations of every sub-env.
        action_map: maps ``act``'s actions onto the env's action box.
        reset_seed: sub-env ``i`` is reset with ``reset_seed + i`` when iteration starts.
        max_steps: the most steps taken.
        first_episodes_only: stop once every sub-env's first episode has ended.

    After (or during) the iteration, ``steps`` holds the steps taken and ``env_seconds``
    the time spent inside ``env.reset`` and ``env.step``.
    """

    def __init__(
        self,
        vector_env: gym.vector.VectorEnv,
        act: PolicyFunction,
        action_map: ActionMap,
        reset_seed: int,
        max_steps: int,
        first_episodes_only: bool = True,
    ) -> None:
        check_int("max_steps", max_steps, 1)
        self.vector_env, self.act, self.action_map = vector_env, act, action_map
        self.reset_seed, self.max_steps = int(reset_seed), max_steps
        self.first_episodes_only = first_episodes_only
        self.steps = 0
        self.env_seconds = 0.0

    def __iter__(self) -> Iterator[Step]:
        vector_env = self.vector_env
        tick = time.perf_counter()
        obs, _ = vector_env.reset(seed=self.reset_seed)
        self.env_seconds += time.perf_counter() - tick
        alive = np.ones(vector_env.num_envs, dtype=bool)
        resetting = np.zeros(vector_env.num_envs, dtype=bool)
        for t in range(self.max_steps):
            actions = self.act(t, obs)
            env_actions = self.action_map(actions)
            tick = time.perf_counter()
            next_obs, rewards, terminated, truncated, info = vector_env.step(env_actions)
            self.env_seconds += time.perf_counter() - tick
            self.steps = t + 1
            yield Step(t, obs, actions, env_actions, rewards, next_obs, terminated, truncated, info, alive, resetting)
            ended = terminated | truncated
            alive = alive & ~ended
            resetting = ended
            obs = next_obs
            if self.first_episodes_only and not alive.any():
                return
