"""The batched vector envs (docs/design.md, "Batched environments and the sampler"): equal to the single env, isolated blow-ups."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import metarl_envs as envs
from metarl_envs.base import MetaVectorEnv

NUM_ENVS = 3
STEPS = 300


def _rollout_vector(family: str, tasks: list, seed: int, actions: np.ndarray):
    vec = gym.make_vec(envs.env_id(family), num_envs=len(tasks), vectorization_mode="vector_entry_point")
    assert isinstance(vec, MetaVectorEnv)
    vec.set_tasks(tasks)
    obs, _ = vec.reset(seed=seed)
    trace = [(obs, None, None, None, None)]
    for action in actions:
        trace.append(vec.step(action))
    vec.close()
    return trace


@pytest.mark.parametrize("family", list(envs.FAMILIES))
def test_vector_env_equals_single_env_over_300_steps_and_resets(family: str) -> None:
    """Same task, seed and actions: same observations, rewards, terminations and truncations."""
    tasks = envs.distribution(family).sample(NUM_ENVS, "train", np.random.default_rng(0))
    single = gym.make(envs.env_id(family))  # with TimeLimit
    high = single.action_space.high
    rng = np.random.default_rng(1)
    actions = rng.uniform(-high, high, size=(STEPS, NUM_ENVS, *single.action_space.shape))
    trace = _rollout_vector(family, tasks, seed=40, actions=actions)
    resets = 0
    for i, task in enumerate(tasks):
        obs, _ = single.reset(seed=40 + i, options={"task": task})
        np.testing.assert_allclose(obs, trace[0][0][i], rtol=0, atol=1e-6)
        done = False
        for t in range(STEPS):
            v_obs, v_reward, v_term, v_trunc, v_info = trace[t + 1]
            if done:  # gymnasium next-step autoreset: this step of the vector env is the reset
                obs, _ = single.reset()
                resets += 1
                np.testing.assert_allclose(obs, v_obs[i], rtol=0, atol=1e-6)
                assert v_reward[i] == 0 and not v_term[i] and not v_trunc[i]
                done = False
                continue
            obs, reward, terminated, truncated, info = single.step(actions[t, i])
            np.testing.assert_allclose(obs, v_obs[i], rtol=0, atol=1e-6, err_msg=f"sub-env {i} step {t}")
            assert abs(reward - v_reward[i]) <= 1e-6
            assert (terminated, truncated) == (v_term[i], v_trunc[i])
            for key in ("reward_ctrl", "x_velocity", "reward_dist"):
                if key in info:
                    assert abs(info[key] - v_info[key][i]) <= 1e-6
            done = terminated or truncated
    assert resets >= NUM_ENVS  # every sub-env crossed at least one reset (horizon <= 200 < 300)


def test_make_vec_passes_the_horizon_and_tasks_take_effect_at_reset() -> None:
    vec = gym.make_vec("MetaRL/HalfCheetahVel-v0", num_envs=2, vectorization_mode="vector_entry_point")
    assert vec.max_episode_steps == envs.family_spec("HalfCheetahVel").horizon == 200
    tasks = envs.distribution("HalfCheetahVel").sample(2, "test", np.random.default_rng(0))
    vec.reset(seed=0)
    vec.set_tasks(tasks)
    assert vec.get_tasks() == tasks and vec.tasks != tasks  # pending until the next reset
    vec.reset(seed=0)
    assert vec.tasks == tasks
    with pytest.raises(ValueError, match="needs 2 tasks"):
        vec.set_tasks(tasks[:1])


def _blow_up_sub_env(vec, index: int) -> None:
    """Tiny masses and an enormous actuator gain ("huge action") in one sub-env."""
    vec._fields["body_mass"][index] *= 1e-12
    vec._batch.expand("actuator_gear")[index] *= 1e12


def test_blow_up_in_one_sub_env_truncates_it_and_leaves_the_others_untouched() -> None:
    family = "HalfCheetahRandParams"
    tasks = envs.distribution(family).sample(3, "train", np.random.default_rng(0))
    actions = np.ones((5, 3, 6))
    clean = _rollout_vector(family, tasks, seed=3, actions=actions)
    vec = gym.make_vec(envs.env_id(family), num_envs=3, vectorization_mode="vector_entry_point")
    vec.set_tasks(tasks)
    vec.reset(seed=3)
    _blow_up_sub_env(vec, 1)
    obs, reward, terminated, truncated, info = vec.step(actions[0])
    assert info["sim_unstable"].tolist() == [False, True, False]
    assert truncated.tolist() == [False, True, False] and not terminated.any()
    assert np.isfinite(obs).all() and np.isfinite(reward).all() and reward[1] == 0.0
    for key, value in info.items():
        assert np.isfinite(np.asarray(value, dtype=float)).all(), key
    for j in (0, 2):  # the others are exactly as without the blow-up
        np.testing.assert_array_equal(obs[j], clean[1][0][j])
        assert reward[j] == clean[1][1][j]
    obs, *_ = vec.step(actions[1])  # next-step autoreset of sub-env 1
    assert np.isfinite(obs).all()
    np.testing.assert_array_equal(obs[[0, 2]], clean[2][0][[0, 2]])


def test_blow_up_in_the_single_env_truncates_with_sim_unstable() -> None:
    env = gym.make("MetaRL/HalfCheetahRandParams-v0")
    env.reset(seed=0)
    model = env.unwrapped.model
    model.body_mass[:] *= 1e-12
    model.actuator_gear[:] *= 1e12
    obs, reward, terminated, truncated, info = env.step(np.ones(6, dtype=np.float32))
    assert info["sim_unstable"] and truncated and not terminated
    assert np.isfinite(obs).all() and reward == 0.0


@pytest.mark.parametrize("vectorized", [False, True])
def test_out_of_range_actions_are_clipped_consistently(vectorized: bool) -> None:
    """1e6 and 1e200 are both the action at the bound: same observation, same finite reward, stable."""
    results = []
    for value in (1.0, 1e6, 1e200):
        if vectorized:
            env = gym.make_vec("MetaRL/HalfCheetahVel-v0", num_envs=2, vectorization_mode="vector_entry_point")
            env.reset(seed=0)
            obs, reward, _, truncated, info = env.step(np.array([[value] * 6, [0.5] * 6]))
            assert not info["sim_unstable"].any() and not truncated.any()
            obs, reward = obs[0], reward[0]
        else:
            env = gym.make("MetaRL/HalfCheetahVel-v0").unwrapped
            env.reset(seed=0)
            obs, reward, _, truncated, info = env.step(np.full(6, value))
            assert not info["sim_unstable"] and not truncated
        env.close()
        assert np.isfinite(obs).all() and np.isfinite(reward)
        results.append((obs, reward))
    for obs, reward in results[1:]:
        np.testing.assert_array_equal(obs, results[0][0])
        assert reward == results[0][1]


def test_vector_env_refuses_bad_input() -> None:
    vec = gym.make_vec("MetaRL/AntGoal-v0", num_envs=2, vectorization_mode="vector_entry_point")
    with pytest.raises(RuntimeError, match="reset"):
        vec.step(np.zeros((2, 8)))
    vec.reset(seed=0)
    with pytest.raises(ValueError, match="finite"):
        vec.step(np.full((2, 8), np.nan))
    with pytest.raises(ValueError, match="num_threads"):
        gym.make_vec("MetaRL/AntGoal-v0", num_envs=2, vectorization_mode="vector_entry_point",
                     num_threads=-1)


@pytest.mark.parametrize("family", ["HalfCheetahRandParams", "HopperRandParams", "AntCrippled"])
def test_switching_tasks_leaves_no_trace(family: str) -> None:
    """After tasks A, B, A a sub-env (and the single env) behaves as a fresh env with task A."""
    first, second = envs.distribution(family).sample(2, "ood", np.random.default_rng(4))
    env = gym.make(envs.env_id(family))
    actions = np.random.default_rng(0).uniform(-1, 1, (10, *env.action_space.shape))

    def run_single(single: gym.Env, task) -> np.ndarray:
        observations = [single.reset(seed=8, options={"task": task})[0]]
        observations += [single.step(a)[0] for a in actions]
        return np.array(observations)

    fresh = run_single(gym.make(envs.env_id(family)), first)
    run_single(env, first)
    run_single(env, second)
    np.testing.assert_array_equal(run_single(env, first), fresh)

    vec = gym.make_vec(envs.env_id(family), num_envs=2, vectorization_mode="vector_entry_point")
    for tasks in ([first, second], [second, first], [first, second]):
        observations = [vec.reset(seed=8, options={"tasks": tasks})[0]]
        observations += [vec.step(np.stack([a, a]))[0] for a in actions]
    np.testing.assert_array_equal(np.array(observations)[:, 0], fresh)
