"""A family registered from outside the package: the public API and the command line.

The toy family lives in a module written to a temporary folder, as a user's own
code would; the package is never edited. The CLI finds it through METARL_PLUGINS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import envs

# A user's module: a 1-D line walk to a goal, with its task, distribution, single and
# batched envs, registered at import time (the walkthrough in docs/adding-a-family.md).
TOY_MODULE = textwrap.dedent(
    '''
    """ToyLine: walk along a line to a goal position."""

    import dataclasses
    from typing import Any, ClassVar

    import gymnasium as gym
    import numpy as np

    import envs
    from envs.base import MetaEnv, MetaVectorEnv, check_action
    from envs.tasks import Task, TaskDistribution, check_range


    @dataclasses.dataclass(frozen=True)
    class ToyLineTask(Task):
        goal_m: float
        family: ClassVar[str] = "ToyLine"

        def validate(self) -> None:
            check_range("goal_m", self.goal_m, -2.0, 2.0)


    class ToyLineDistribution(TaskDistribution):
        family: ClassVar[str] = "ToyLine"
        task_class: ClassVar[type[Task]] = ToyLineTask

        def _sample(self, n, split, rng):
            if split == "ood":
                # goal: U(0.5, 1.0) with a random sign
                goals = rng.uniform(0.5, 1.0, size=n) * rng.choice([-1.0, 1.0], size=n)
            else:
                goals = rng.uniform(-0.5, 0.5, size=n)  # goal: U(-0.5, 0.5)
            return [ToyLineTask(float(g)) for g in goals]

        def describe(self) -> dict[str, Any]:
            return {"varies": "goal", "parameters": {"goal_m": "goal position [m]"},
                    "splits": {"train": "U(-0.5, 0.5)", "test": "U(-0.5, 0.5)", "ood": "0.5 < |g| <= 1"}}


    def _step(position, action, goal):
        position = position + np.clip(action[:, 0], -0.1, 0.1)
        reward = -np.abs(position - goal)
        return position, reward


    class ToyLineEnv(MetaEnv):
        metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
        task_class: ClassVar[type[Task]] = ToyLineTask

        def __init__(self, task=None, render_mode=None):
            super().__init__(task)
            self.render_mode = render_mode
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float64)
            self.action_space = gym.spaces.Box(-0.1, 0.1, shape=(1,), dtype=np.float64)
            self._position = 0.0

        @classmethod
        def default_task(cls):
            return ToyLineTask(0.0)

        def reset(self, *, seed=None, options=None):
            self._begin_reset(seed, options)
            self._position = 0.0
            return np.array([self._position]), {}

        def step(self, action):
            action = check_action(action, self.action_space.shape)
            position, reward = _step(np.array([self._position]), action[None], self.task.goal_m)
            self._position = float(position[0])
            return np.array([self._position]), float(reward[0]), False, False, {"reward_dist": float(reward[0])}

        def render(self):
            image = np.full((64, 64, 3), 255, dtype=np.uint8)
            column = int(np.clip((self._position + 2.0) / 4.0 * 63, 0, 63))
            goal = int(np.clip((self.task.goal_m + 2.0) / 4.0 * 63, 0, 63))
            image[:, goal] = (40, 170, 60)
            image[28:36, column] = (40, 80, 220)
            return image


    class ToyLineVectorEnv(MetaVectorEnv):
        task_class: ClassVar[type[Task]] = ToyLineTask
        default_task = ToyLineEnv.default_task

        def __init__(self, num_envs=1, max_episode_steps=20):
            super().__init__(num_envs, max_episode_steps)
            self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float64)
            self.single_action_space = gym.spaces.Box(-0.1, 0.1, shape=(1,), dtype=np.float64)
            self._finish_init()
            self._positions = np.zeros(num_envs)

        def _reset_envs(self, index):
            self._positions[index] = 0.0
            return self._positions[index, None].copy()

        def _step_envs(self, actions, index):
            goals = np.array([self.tasks[i].goal_m for i in index])
            positions, reward = _step(self._positions[index], actions, goals)
            self._positions[index] = positions
            unstable = np.zeros(index.size, dtype=bool)
            return positions[:, None].copy(), reward, np.zeros(index.size, dtype=bool), unstable, {
                "reward_dist": reward}


    envs.register_family(
        "ToyLine", module=__name__, env_class="ToyLineEnv", vector_env_class="ToyLineVectorEnv",
        distribution_class="ToyLineDistribution", horizon=20,
    )
    '''
)


@pytest.fixture
def toy_plugin(tmp_path: Path) -> dict[str, str]:
    """An environment whose METARL_PLUGINS names the toy module on PYTHONPATH."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / "toy_line_family.py").write_text(TOY_MODULE)
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(folder), *filter(None, [environment.get("PYTHONPATH", "")])]
    )
    environment["METARL_PLUGINS"] = "toy_line_family"
    return environment


def _metarl(args: list[str], environment: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "metarl", *args], env=environment, cwd=cwd, capture_output=True,
        text=True, timeout=300,
    )
    assert result.returncode == 0, f"metarl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_toy_family_trains_evaluates_and_renders_through_the_cli(
    toy_plugin: dict[str, str], tmp_path: Path
) -> None:
    listed = _metarl(["envs", "--family", "ToyLine", "--json"], toy_plugin, tmp_path)
    assert json.loads(listed.stdout)["ToyLine"]["id"] == "MetaRL/ToyLine-v0"
    run = tmp_path / "runs" / "toy"
    _metarl(
        ["train", "maml", "--env", "ToyLine", "--preset", "tiny", "--iterations", "2", "--meta-batch-size", "3",
         "--episodes-per-task", "3", "--hidden-sizes", "8", "8", "--device", "cpu", "--no-progress",
         "--no-tensorboard", "--out", str(run)],
        toy_plugin, tmp_path,
    )
    assert json.loads((run / "config.json").read_text())["family"] == "ToyLine"
    _metarl(["evaluate", str(run), "--num-tasks", "3", "--episodes-per-step", "2", "--steps", "1",
             "--device", "cpu", "--no-progress"], toy_plugin, tmp_path)
    evaluation = json.loads((run / "eval_test.json").read_text())
    assert evaluation["family"] == "ToyLine" and len(evaluation["per_task"]) == 3
    assert evaluation["per_task"][0]["task"]["family"] == "ToyLine"
    assert len(evaluation["returns"]["mean"]) == 2  # k = 0, 1
    video = tmp_path / "toy.gif"
    _metarl(["render", str(run), "--split", "test", "--num-tasks", "3", "--episodes-per-step", "2",
             "--steps", "0,1", "--width", "64", "--height", "64", "--out", str(video)], toy_plugin, tmp_path)
    assert video.stat().st_size > 0


def test_without_the_plugin_the_family_is_unknown(toy_plugin: dict[str, str], tmp_path: Path) -> None:
    del toy_plugin["METARL_PLUGINS"]
    result = subprocess.run(
        [sys.executable, "-m", "metarl", "envs", "--family", "ToyLine"], env=toy_plugin, cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "unknown family 'ToyLine'" in result.stderr and "METARL_PLUGINS" in result.stderr


def test_a_plugin_that_cannot_be_imported_is_named(toy_plugin: dict[str, str], tmp_path: Path) -> None:
    toy_plugin["METARL_PLUGINS"] = "no_such_family_module"
    result = subprocess.run(
        [sys.executable, "-m", "metarl", "envs"], env=toy_plugin, cwd=tmp_path, capture_output=True,
        text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "no_such_family_module" in result.stderr and "METARL_PLUGINS" in result.stderr


def test_register_family_checks_its_arguments() -> None:
    spec = envs.family_spec("Point2DNav")
    fields = {"module": spec.module, "env_class": spec.env_class, "vector_env_class": spec.vector_env_class,
              "distribution_class": spec.distribution_class, "horizon": spec.horizon}
    assert envs.register_family("Point2DNav", **fields) == "MetaRL/Point2DNav-v0"  # same spec: no-op
    with pytest.raises(ValueError, match="already registered"):
        envs.register_family("Point2DNav", **{**fields, "horizon": 7})
    with pytest.raises(ValueError, match=r"\[A-Z\]"):
        envs.register_family("toy line", **fields)
    with pytest.raises(ValueError, match="horizon"):
        envs.register_family("ToyBad", **{**fields, "horizon": 0})
    assert "ToyBad" not in envs.families()
