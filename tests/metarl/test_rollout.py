"""The one rollout loop: what it hands each step to the sampler, the fine-tune evaluation and the contexts."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import metarl_envs as envs
from metarl.core.policy import ActionMap
from metarl.core.rollout import Rollout, env_dims, space_dims


class ScriptedVectorEnv:
    """Sub-env ``i``'s episodes last ``lengths[i]`` steps; next-step autoreset as gymnasium's.

    The observation is ``[seed + i, steps taken in the episode]``, the reward is the
    action's first component plus 100 on an autoreset pseudo-step.
    """

    def __init__(self, lengths: list[int]) -> None:
        self.num_envs = len(lengths)
        self.lengths = np.asarray(lengths)
        self.single_action_space = gym.spaces.Box(low=-2.0, high=2.0, shape=(1,))
        self.stepped_with: list[np.ndarray] = []

    def _obs(self) -> np.ndarray:
        return np.stack([self.ids, self.clock], axis=1).astype(np.float64)

    def reset(self, seed: int) -> tuple[np.ndarray, dict]:
        self.ids = seed + np.arange(self.num_envs)
        self.clock = np.zeros(self.num_envs)
        self.pending_reset = np.zeros(self.num_envs, dtype=bool)
        return self._obs(), {}

    def step(self, actions: np.ndarray) -> tuple:
        self.stepped_with.append(np.array(actions))
        rewards = np.where(self.pending_reset, 100.0, actions[:, 0])
        self.clock = np.where(self.pending_reset, 0.0, self.clock + 1)
        ended = ~self.pending_reset & (self.clock >= self.lengths)
        self.pending_reset = ended
        return self._obs(), rewards, ended, np.zeros(self.num_envs, dtype=bool), {}


def test_one_episode_per_sub_env_masks_the_finished_and_stops_when_all_are_done() -> None:
    env = ScriptedVectorEnv([2, 4])
    seen_t: list[int] = []

    def act(t: int, obs: np.ndarray) -> np.ndarray:
        seen_t.append(t)
        return np.full((2, 1), 0.5 + t)

    rollout = Rollout(env, act, ActionMap.from_space(env.single_action_space, kind="env_units"), 7, max_steps=10)
    steps = list(rollout)
    assert seen_t == [0, 1, 2, 3] and rollout.steps == 4
    assert [step.alive.tolist() for step in steps] == [[True, True], [True, True], [False, True], [False, True]]
    assert [step.resetting.tolist() for step in steps] == [[False, False], [False, False], [True, False],
                                                           [False, False]]
    np.testing.assert_array_equal(steps[0].observations, [[7, 0], [8, 0]])  # reset seed + i
    np.testing.assert_array_equal(steps[0].next_observations, steps[1].observations)
    # The env got the mapped actions (clipped to the box), the step keeps the policy's own.
    np.testing.assert_array_equal(steps[3].actions, [[3.5], [3.5]])
    np.testing.assert_array_equal(env.stepped_with[3], [[2.0], [2.0]])
    np.testing.assert_array_equal(steps[3].env_actions, [[2.0], [2.0]])
    returns = sum(np.where(step.alive, step.rewards, 0.0) for step in steps)
    np.testing.assert_array_equal(returns, [0.5 + 1.5, 0.5 + 1.5 + 2.0 + 2.0])
    assert rollout.env_seconds > 0.0


def test_running_on_through_autoresets_until_the_caller_stops() -> None:
    env = ScriptedVectorEnv([1, 3])
    rollout = Rollout(env, lambda t, obs: np.zeros((2, 1)), ActionMap.from_space(env.single_action_space), 0,
                      max_steps=6, first_episodes_only=False)
    steps = list(rollout)
    assert rollout.steps == 6  # every sub-env ended its first episode by step 3: no early stop
    assert [bool(step.resetting[0]) for step in steps] == [False, True, False, True, False, True]
    assert [float(step.rewards[0]) for step in steps] == [0.0, 100.0, 0.0, 100.0, 0.0, 100.0]
    rollout = Rollout(env, lambda t, obs: np.zeros((2, 1)), ActionMap.from_space(env.single_action_space), 0,
                      max_steps=6, first_episodes_only=False)
    for step in rollout:
        if step.t == 1:
            break
    assert rollout.steps == 2


def test_max_steps_is_checked() -> None:
    env = ScriptedVectorEnv([1])
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="max_steps must be an integer >= 1"):
            Rollout(env, lambda t, obs: obs, ActionMap.from_space(env.single_action_space), 0, bad)


def test_env_dims_are_the_flattened_space_sizes() -> None:
    assert env_dims("Point2DNav") == (2, 2)
    env = gym.make(envs.env_id("HalfCheetahDir"))
    assert env_dims("HalfCheetahDir") == space_dims(env.observation_space, env.action_space) == (17, 6)
    env.close()
    box = gym.spaces.Box(low=-1.0, high=1.0, shape=(3, 4))
    assert space_dims(box, gym.spaces.Box(low=-1.0, high=1.0, shape=(2,))) == (12, 2)
