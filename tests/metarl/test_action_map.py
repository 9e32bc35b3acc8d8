"""The policy acts in normalised units; ActionMap takes its actions to the env's box."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

import metarl_envs as envs
from metarl.core.policy import ActionMap, GaussianMLPPolicy
from metarl.core.sampler import VectorEnvSampler


def test_action_map_spans_the_box_and_is_identity_for_unit_boxes() -> None:
    space = gym.spaces.Box(low=np.array([-0.1, 0.0]), high=np.array([0.1, 2.0]), dtype=np.float64)
    action_map = ActionMap.from_space(space)
    assert not action_map.is_identity
    np.testing.assert_allclose(action_map(np.array([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])),
                               [[-0.1, 0.0], [0.1, 2.0], [0.0, 1.0]])
    cheetah = gym.make(envs.env_id("HalfCheetahVel")).action_space
    assert ActionMap.from_space(cheetah).is_identity


def test_action_map_clips_to_the_box_and_keeps_the_dtype() -> None:
    # A Gaussian policy's samples overshoot the box; the env must see them clipped
    # (rllab's normalize, stable-baselines3), or a control cost is charged on noise
    # the actuators never apply.
    point = ActionMap.from_space(gym.spaces.Box(low=-0.1, high=0.1, shape=(2,), dtype=np.float64))
    np.testing.assert_allclose(point(np.array([[3.0, -0.5], [-1.5, 1.0]])), [[0.1, -0.05], [-0.1, 0.1]])
    cheetah = ActionMap.from_space(gym.make(envs.env_id("HalfCheetahDir")).action_space)
    actions = np.array([[2.5, -1.7, 0.3, -0.2, 1.0, -1.0]], dtype=np.float32)
    mapped = cheetah(actions)
    assert mapped.dtype == np.float32
    np.testing.assert_array_equal(mapped, np.array([[1.0, -1.0, 0.3, -0.2, 1.0, -1.0]], dtype=np.float32))
    unbounded = ActionMap.from_space(gym.spaces.Box(low=-np.inf, high=np.inf, shape=(1,)))
    np.testing.assert_array_equal(unbounded(np.array([[-7.0]])), [[-7.0]])


def test_sampler_moves_point_by_the_mapped_action() -> None:
    # A policy whose mean is +0.5 (normalised) on both axes with tiny noise moves
    # the point 0.05 m per step on each axis: half of the 0.1 m action limit.
    policy = GaussianMLPPolicy(2, 2, (4,), init_std=1e-6)
    with torch.no_grad():
        for layer in policy.layers:
            layer.weight.zero_()
            layer.bias.zero_()
        policy.layers[-1].bias.fill_(0.5)
    sampler = VectorEnvSampler("Point2DNav", num_tasks=1, device="cpu", seed=0)
    task = envs.distribution("Point2DNav").task_class(0.45, 0.45)
    params = {name: value.unsqueeze(0) for name, value in policy.params().items()}
    episodes = sampler.sample(policy, params, [task], 1, torch.Generator().manual_seed(0))
    positions = episodes.observations[0, 0, :4]  # [time, 2]
    np.testing.assert_allclose(positions.numpy(), [[0, 0], [0.05, 0.05], [0.1, 0.1], [0.15, 0.15]], atol=1e-5)
    np.testing.assert_allclose(episodes.actions[0, 0, 0].numpy(), [0.5, 0.5], atol=1e-5)


def _constant_policy(obs_dim: int, act_dim: int, mean: float) -> GaussianMLPPolicy:
    policy = GaussianMLPPolicy(obs_dim, act_dim, (4,), init_std=1e-6)
    with torch.no_grad():
        for layer in policy.layers:
            layer.weight.zero_()
            layer.bias.zero_()
        policy.layers[-1].bias.fill_(mean)
    return policy


def test_the_env_sees_and_charges_only_the_clipped_action() -> None:
    # Mean 5 and mean 1 (normalised) are the same action once clipped to the box, so
    # the episodes' rewards (control cost included) must be identical; episodes keep
    # the policy's own unclipped sample.
    task = envs.distribution("HalfCheetahDir").task_class(1)
    rewards, actions = [], []
    for mean in (5.0, 1.0):
        policy = _constant_policy(17, 6, mean)
        sampler = VectorEnvSampler("HalfCheetahDir", num_tasks=1, device="cpu", seed=0, horizon=20)
        params = {name: value.unsqueeze(0) for name, value in policy.params().items()}
        episodes = sampler.sample(policy, params, [task], 2, torch.Generator().manual_seed(0))
        sampler.close()
        rewards.append(episodes.rewards)
        actions.append(episodes.actions)
    torch.testing.assert_close(rewards[0], rewards[1])
    assert float(actions[0].min()) > 4.9 and float(actions[1].max()) < 1.1


def test_unbounded_boxes_map_without_numpy_warnings() -> None:
    # -inf + inf is nan: the bounds of an unbounded dimension must stay out of the arithmetic.
    space = gym.spaces.Box(low=np.array([-np.inf, -1.0, 0.0]), high=np.array([np.inf, 1.0, np.inf]), dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        action_map = ActionMap.from_space(space)
        mapped = action_map(np.array([[-7.0, 3.0, -2.0]]))
    np.testing.assert_array_equal(action_map.offset, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(action_map.scale, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(mapped, [[-7.0, 1.0, -2.0]])  # half-bounded: passes through


def test_the_three_kinds_keep_their_own_arithmetic() -> None:
    # The sampler (normalized), the fine-tuned models (clip_then_rescale) and the context
    # behaviours (env_units) round differently; each kind must reproduce its caller exactly.
    space = gym.spaces.Box(low=np.array([-0.1, 0.3], dtype=np.float32), high=np.array([0.7, 2.9], dtype=np.float32))
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    actions = np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32)

    rescaled = ActionMap.from_space(space, kind="clip_then_rescale")(actions)
    clipped = np.clip(actions.astype(np.float64), -1.0, 1.0)
    assert rescaled.dtype == np.float64
    np.testing.assert_array_equal(rescaled, low + (clipped + 1.0) * 0.5 * (high - low))

    normalized = ActionMap.from_space(space)(actions)
    assert normalized.dtype == np.float32
    expected = np.clip((high + low) / 2.0 + (high - low) / 2.0 * actions, low, high).astype(np.float32)
    np.testing.assert_array_equal(normalized, expected)
    assert not np.array_equal(normalized.astype(np.float64), rescaled)  # the conventions genuinely differ

    env_units = ActionMap.from_space(space, kind="env_units")(actions)
    assert env_units.dtype == np.float64
    np.testing.assert_array_equal(env_units, np.clip(actions.astype(np.float64), space.low, space.high))


def test_action_map_kinds_are_checked() -> None:
    box = gym.spaces.Box(low=-1.0, high=1.0, shape=(2,))
    with pytest.raises(ValueError, match="kind must be one of normalized, clip_then_rescale, env_units"):
        ActionMap.from_space(box, kind="tanh")
    with pytest.raises(ValueError, match="clip_then_rescale' needs a bounded box"):
        ActionMap.from_space(gym.spaces.Box(low=-np.inf, high=np.inf, shape=(1,)), kind="clip_then_rescale")
    assert not ActionMap.from_space(box, kind="clip_then_rescale").is_identity
