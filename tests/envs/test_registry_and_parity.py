"""Registry vs gymnasium, `metarl envs`, and parity of the nominal robots with gymnasium v5."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import metarl_envs as envs
from metarl_envs import _REGISTRY
from metarl_envs.mujoco_core import ANT, HALF_CHEETAH, HOPPER, WALKER2D, build_model

DOCUMENTED_ORDER = ("Point2DNav", "HalfCheetahVel", "HalfCheetahDir", "AntDir", "AntGoal",
                "HalfCheetahRandParams", "HopperRandParams", "Walker2dRandParams",
                "HalfCheetahCrippled", "AntCrippled")


def test_registry_agrees_with_gymnasium_registrations() -> None:
    assert envs.FAMILIES == DOCUMENTED_ORDER
    registered = sorted(i for i in gym.registry if i.startswith("MetaRL/"))
    assert registered == sorted(envs.env_id(f) for f in envs.FAMILIES)
    for family, spec in _REGISTRY.items():
        gym_spec = gym.spec(envs.env_id(family))
        assert gym_spec.entry_point == f"{spec.module}:{spec.env_class}"
        assert gym_spec.vector_entry_point == f"{spec.module}:{spec.vector_env_class}"
        assert gym_spec.max_episode_steps == spec.horizon == (100 if family == "Point2DNav" else 200)
        assert envs.distribution(family).family == family


def test_metarl_envs_lists_every_family(capsys: pytest.CaptureFixture[str]) -> None:
    from metarl.commands import envs_cmd

    assert envs_cmd.main([]) == 0
    out = capsys.readouterr().out
    for family in envs.FAMILIES:
        assert f"{family}  ({envs.env_id(family)}" in out
    assert "split ood   none:" in out  # the Dir families say why they have no ood split


@pytest.mark.parametrize("robot", [HALF_CHEETAH, HOPPER, WALKER2D, ANT])
def test_robot_constants_match_the_models(robot) -> None:
    model = build_model(robot)
    assert robot.render_fps == round(1 / (model.opt.timestep * robot.frame_skip))
    task_classes = {"half_cheetah": "HalfCheetahRandParams", "hopper": "HopperRandParams",
                    "walker2d": "Walker2dRandParams"}
    if robot.name in task_classes:
        task = envs.distribution(task_classes[robot.name]).task_class.nominal()
        for field, values in task.multipliers().items():
            assert values.shape == getattr(model, field).shape, field


# (our family with its nominal task, gymnasium id, observation entries compared, same reward)
PARITY = [
    ("HalfCheetahRandParams", "HalfCheetah-v5", None, True),
    ("HopperRandParams", "Hopper-v5", None, True),
    ("Walker2dRandParams", "Walker2d-v5", None, True),
    ("HalfCheetahCrippled", "HalfCheetah-v5", None, False),  # ctrl weight 0.05, not 0.1
    # Ant: positions and velocities (contact forces differ by design, see envs.mujoco_core)
    ("AntCrippled", "Ant-v5", 27, False),
]


@pytest.mark.parametrize(("family", "gym_id", "compared", "same_reward"), PARITY)
def test_nominal_robots_match_gymnasium_v5(family: str, gym_id: str, compared: int | None,
                                           same_reward: bool) -> None:
    ours, theirs = gym.make(envs.env_id(family)), gym.make(gym_id)
    obs_ours, _ = ours.reset(seed=5)
    obs_theirs, _ = theirs.reset(seed=5)
    np.testing.assert_array_equal(obs_ours[:compared], obs_theirs[:compared])
    rng = np.random.default_rng(0)
    for _ in range(60):
        action = rng.uniform(-1, 1, ours.action_space.shape)
        obs_ours, reward_ours, term_ours, _, info_ours = ours.step(action)
        obs_theirs, reward_theirs, term_theirs, _, info_theirs = theirs.step(action)
        np.testing.assert_array_equal(obs_ours[:compared], obs_theirs[:compared])
        assert term_ours == term_theirs
        assert info_ours["x_velocity"] == info_theirs["x_velocity"]
        if same_reward:  # the control cost sums in another order: equal to rounding
            assert reward_ours == pytest.approx(reward_theirs, rel=0, abs=1e-12)
        if term_ours:
            break
