"""The task protocol of every family (docs/design.md, "Task protocol" and "Task families"): sampling, splits, set_task, errors."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest

import metarl_envs as envs
from tests.envs.helpers import (
    DYNAMICS_FAMILIES,
    GOAL_FAMILIES,
    NO_OOD,
    OUT_OF_DOMAIN,
    outside_train_support,
    with_field,
)

ALL = list(envs.FAMILIES)


@pytest.mark.parametrize("family", ALL)
def test_sampling_is_reproducible_from_the_rng(family: str) -> None:
    dist = envs.distribution(family)
    first = dist.sample(8, "train", np.random.default_rng(3))
    second = dist.sample(8, "train", np.random.default_rng(3))
    other = dist.sample(8, "train", np.random.default_rng(4))
    assert first == second
    assert first != other


@pytest.mark.parametrize("family", ALL)
def test_train_and_test_draws_differ(family: str) -> None:
    dist = envs.distribution(family)
    rng_seed = 11
    train = dist.sample(20, "train", np.random.default_rng(rng_seed))
    test = dist.sample(20, "test", np.random.default_rng(rng_seed))
    assert train != test
    if family not in NO_OOD:
        assert not any(outside_train_support(t) for t in train + test)


@pytest.mark.parametrize("family", [f for f in ALL if f not in NO_OOD])
def test_ood_draws_lie_outside_the_train_support(family: str) -> None:
    dist = envs.distribution(family)
    ood = dist.sample(30, "ood", np.random.default_rng(5))
    assert all(outside_train_support(t) for t in ood)
    train = dist.sample(30, "train", np.random.default_rng(5))
    assert not any(outside_train_support(t) for t in train)


@pytest.mark.parametrize("family", NO_OOD)
def test_families_without_ood_say_why(family: str) -> None:
    dist = envs.distribution(family)
    assert dist.no_ood_reason and dist.splits == ("train", "test")
    with pytest.raises(ValueError, match="no ood split"):
        dist.sample(1, "ood", np.random.default_rng(0))


@pytest.mark.parametrize("family", ALL)
def test_tasks_round_trip_through_json_with_a_stable_id(family: str) -> None:
    task = envs.distribution(family).sample(1, "train", np.random.default_rng(0))[0]
    again = envs.task_from_dict(json.loads(json.dumps(task.to_dict())))
    assert again == task and again.task_id == task.task_id
    assert hash(again) == hash(task)


def _first_obs_and_step(env: gym.Env, task: envs.Task, seed: int, action: np.ndarray):
    obs, _ = env.reset(seed=seed, options={"task": task})
    next_obs, reward, *_ = env.step(action)
    return obs, next_obs, reward


@pytest.mark.parametrize("family", ALL)
def test_set_task_twice_equals_once(family: str) -> None:
    dist = envs.distribution(family)
    task = dist.sample(1, "train", np.random.default_rng(1))[0]
    once, twice = gym.make(envs.env_id(family)), gym.make(envs.env_id(family))
    once.unwrapped.set_task(task)
    twice.unwrapped.set_task(task)
    twice.reset(seed=0)  # the task is applied here ...
    twice.unwrapped.set_task(task)  # ... and set again: must not compound
    action = np.full(once.action_space.shape, 0.5, dtype=np.float32)
    results = []
    for env in (once, twice):
        obs, _ = env.reset(seed=7)
        next_obs, reward, *_ = env.step(action)
        results.append((obs, next_obs, reward))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert results[0][2] == results[1][2]
    assert once.unwrapped.get_task() == task


@pytest.mark.parametrize("family", ALL)
def test_different_tasks_change_rewards_or_dynamics(family: str) -> None:
    dist = envs.distribution(family)
    env = gym.make(envs.env_id(family))
    first, second = dist.sample(2, "ood" if family not in NO_OOD else "train", np.random.default_rng(2))
    if first == second:  # discrete families may repeat: take the other value
        second = [t for t in dist.sample(20, "train", np.random.default_rng(9)) if t != first][0]
    action = np.full(env.action_space.shape, env.action_space.high[0] * 0.9, dtype=np.float32)
    obs_a, next_a, reward_a = _first_obs_and_step(env, first, 3, action)
    obs_b, next_b, reward_b = _first_obs_and_step(env, second, 3, action)
    np.testing.assert_array_equal(obs_a, obs_b)  # same start state
    if family in GOAL_FAMILIES:
        assert reward_a != reward_b
    else:
        assert family in DYNAMICS_FAMILIES
        assert np.abs(next_a - next_b).max() > 1e-6


@pytest.mark.parametrize("family", ALL)
def test_nan_and_out_of_domain_task_values_name_the_field(family: str) -> None:
    dist = envs.distribution(family)
    task = dist.sample(1, "train", np.random.default_rng(0))[0]
    field, bad = OUT_OF_DOMAIN[family]
    with pytest.raises(ValueError, match=field):
        dist.task_from_dict(with_field(task, field, bad))
    with pytest.raises(ValueError, match=rf"{field}.*(finite|one of|\[)"):
        dist.task_from_dict(with_field(task, field, math.nan))


@pytest.mark.parametrize("family", ALL)
def test_a_task_of_another_family_is_refused(family: str) -> None:
    other = ALL[(ALL.index(family) + 1) % len(ALL)]
    foreign = envs.distribution(other).sample(1, "train", np.random.default_rng(0))[0]
    env = gym.make(envs.env_id(family))
    with pytest.raises(ValueError, match=f"expected a {family} task"):
        env.unwrapped.set_task(foreign)
    with pytest.raises(ValueError, match=f"expected a {family} task"):
        env.reset(options={"task": foreign})
    vec = gym.make_vec(envs.env_id(family), num_envs=2, vectorization_mode="vector_entry_point")
    with pytest.raises(ValueError, match=f"expected a {family} task"):
        vec.set_tasks([foreign, foreign])
    with pytest.raises(ValueError, match=f"is of family {other!r}"):
        envs.distribution(family).task_from_dict(foreign.to_dict())


@pytest.mark.parametrize("family", ALL)
def test_a_wrong_action_shape_is_refused(family: str) -> None:
    env = gym.make(envs.env_id(family)).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(env.action_space.shape[0] + 1))
    vec = gym.make_vec(envs.env_id(family), num_envs=2, vectorization_mode="vector_entry_point")
    vec.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        vec.step(np.zeros(env.action_space.shape))


def test_unknown_family_and_id_list_the_available_ones() -> None:
    with pytest.raises(ValueError, match="available families: Point2DNav, HalfCheetahVel"):
        envs.distribution("HalfCheetahJump")
    with pytest.raises(ValueError, match="AntCrippled"):
        envs.env_id("Humanoid")
    with pytest.raises(ValueError, match="available"):
        envs.task_from_dict({"family": "Nope"})
    with pytest.raises(gym.error.Error):
        gym.make("MetaRL/HalfCheetahJump-v0")


def test_rand_params_task_vectors_must_have_the_robot_sizes() -> None:
    task = envs.distribution("HopperRandParams").sample(1, "train", np.random.default_rng(0))[0]
    data = task.to_dict()
    data["body_mass_multiplier"] = data["body_mass_multiplier"][:-1]
    with pytest.raises(ValueError, match="body_mass_multiplier must hold 5 numbers"):
        envs.task_from_dict(data)
