"""rgb_array rendering of the MuJoCo families through MuJoCo's renderer."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import metarl_envs as envs


@pytest.fixture(scope="module", autouse=True)
def _headless_gl() -> None:
    """Pick a working headless backend (egl/osmesa) as the README's test command would."""
    from metarl.video.render import select_gl_backend

    select_gl_backend()


@pytest.mark.render
@pytest.mark.parametrize("family", ["HalfCheetahVel", "AntGoal", "HopperRandParams"])
def test_rgb_array_frames_follow_the_robot(family: str) -> None:
    env = gym.make(envs.env_id(family), render_mode="rgb_array", width=96, height=64)
    env.reset(seed=0)
    first = env.render()
    assert first.shape == (64, 96, 3) and first.dtype == np.uint8
    assert first.std() > 1.0  # a picture, not a blank frame
    for _ in range(15):
        env.step(env.action_space.sample())
    later = env.render()
    assert later.shape == first.shape and not np.array_equal(first, later)
    env.close()


def test_render_without_a_render_mode_returns_none_and_bad_modes_are_refused() -> None:
    env = gym.make("MetaRL/HalfCheetahVel-v0").unwrapped
    env.reset(seed=0)
    assert env.render() is None
    with pytest.raises(ValueError, match="render_mode"):
        envs.goal_families.HalfCheetahVelEnv(render_mode="human")
