"""Every registered id passes gymnasium's and stable-baselines3's env checkers; PPO runs on one."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

import metarl_envs as envs

# Warnings the checkers raise by design: unbounded observation boxes (gymnasium's own
# MuJoCo envs have them too), and Point2DNav's action box [-0.1, 0.1] (docs/design.md, "Task families") in
# float64 (a recommendation of stable-baselines3, not an error).
EXPECTED_WARNINGS = (".*infinity.*", ".*symmetric and normalized Box action space.*",
                     ".*action space has dtype float64.*")


def _strict_warnings(family: str) -> warnings.catch_warnings:
    context = warnings.catch_warnings()
    context.__enter__()
    warnings.simplefilter("error")  # any other checker warning is a failure
    warnings.filterwarnings("ignore", message=EXPECTED_WARNINGS[0])
    if family == "Point2DNav":
        warnings.filterwarnings("ignore", message=EXPECTED_WARNINGS[1])
        warnings.filterwarnings("ignore", message=EXPECTED_WARNINGS[2])
    return context


@pytest.mark.parametrize("family", list(envs.FAMILIES))
def test_gymnasium_check_env(family: str) -> None:
    env = gym.make(envs.env_id(family))
    context = _strict_warnings(family)
    try:
        gym_check_env(env.unwrapped, skip_render_check=True)
    finally:
        context.__exit__(None, None, None)


@pytest.mark.parametrize("family", list(envs.FAMILIES))
def test_stable_baselines3_check_env(family: str) -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(envs.env_id(family))
    context = _strict_warnings(family)
    try:
        sb3_check_env(env, warn=True, skip_render_check=True)
    finally:
        context.__exit__(None, None, None)


@pytest.mark.slow
def test_smoke_stable_baselines3_ppo_trains_a_few_thousand_steps_on_a_suite_env() -> None:
    """Smoke test: PPO runs on a suite env and acts inside the action box (no learning claim)."""
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    env = gym.make("MetaRL/HalfCheetahVel-v0")
    env.unwrapped.set_task(envs.distribution("HalfCheetahVel").sample(1, "train", np.random.default_rng(0))[0])
    model = PPO("MlpPolicy", env, n_steps=1024, batch_size=256, n_epochs=2, seed=0, device="cpu")
    model.learn(total_timesteps=3072)
    assert model.num_timesteps >= 3072
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(action)
