"""Point2DNav: a point mass that must reach a goal in the plane (MAML's 2-D navigation).

The state is the point's position, the action a displacement clipped to
[-0.1, 0.1] on each axis, the reward the negative distance to the goal after
the move. Goals vary from task to task. Pure numpy, no physics engine; the
batched vector env steps every sub-env in one array operation.

References: Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for Fast
Adaptation of Deep Networks", §5.3 and code cbfinn/maml_rl (point_env_rand_goal).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from metarl_envs.base import MetaEnv, MetaVectorEnv, check_action
from metarl_envs.tasks import Task, TaskDistribution, check_range

TRAIN_HALF_WIDTH_M = 0.5
OOD_HALF_WIDTH_M = 1.0
ACTION_LIMIT_M = 0.1
GOAL_TOLERANCE_M = 0.01
GOAL_RGB, AGENT_RGB, PATH_RGB = (40, 170, 60), (40, 80, 220), (120, 120, 120)  # colours of render()
WORLD_LIMIT_M = 10.0  # goals are validated against this; obs space is unbounded


@dataclasses.dataclass(frozen=True)
class Point2DNavTask(Task):
    """Goal position in metres."""

    goal_x_m: float
    goal_y_m: float
    family: ClassVar[str] = "Point2DNav"

    def validate(self) -> None:
        check_range("goal_x_m", self.goal_x_m, -WORLD_LIMIT_M, WORLD_LIMIT_M)
        check_range("goal_y_m", self.goal_y_m, -WORLD_LIMIT_M, WORLD_LIMIT_M)

    @property
    def goal(self) -> np.ndarray:
        return np.array([self.goal_x_m, self.goal_y_m])


class Point2DNavDistribution(TaskDistribution):
    """Goals: train/test ~ U(-0.5, 0.5)^2; ood in the ring 0.5 < ||g||_inf <= 1.0."""

    family: ClassVar[str] = "Point2DNav"
    task_class: ClassVar[type[Task]] = Point2DNavTask

    def _sample(self, n: int, split: str, rng: np.random.Generator) -> list[Task]:
        if split in ("train", "test"):
            # goal: U(-0.5, 0.5)^2
            goals = rng.uniform(-TRAIN_HALF_WIDTH_M, TRAIN_HALF_WIDTH_M, size=(n, 2))
        else:
            # goal: uniform on the square ring 0.5 < ||g||_inf <= 1.0 (rejection sampling)
            goals = np.empty((n, 2))
            filled = 0
            while filled < n:
                draw = rng.uniform(-OOD_HALF_WIDTH_M, OOD_HALF_WIDTH_M, size=(2 * n + 4, 2))
                keep = draw[np.abs(draw).max(axis=1) > TRAIN_HALF_WIDTH_M][: n - filled]
                goals[filled : filled + len(keep)] = keep
                filled += len(keep)
        return [Point2DNavTask(float(x), float(y)) for x, y in goals]

    def describe(self) -> dict[str, Any]:
        return {
            "varies": "goal position",
            "parameters": {"goal_x_m": "goal x [m]", "goal_y_m": "goal y [m]"},
            "splits": {
                "train": "g ~ U(-0.5, 0.5)^2",
                "test": "g ~ U(-0.5, 0.5)^2 (a disjoint random stream)",
                "ood": "g uniform on the ring 0.5 < ||g||_inf <= 1.0",
            },
        }


def _step_points(
    position: np.ndarray, action: np.ndarray, goal: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched dynamics and reward; arrays ``[batch, 2]``. Shared by both envs."""
    move = np.clip(action, -ACTION_LIMIT_M, ACTION_LIMIT_M)
    new_position = position + move
    offset = new_position - goal
    reward = -np.sqrt((offset**2).sum(axis=1))
    terminated = np.all(np.abs(offset) < GOAL_TOLERANCE_M, axis=1)
    return new_position, reward, terminated


class Point2DNavEnv(MetaEnv):
    """Point mass navigating to a goal.

    | observation | meaning | unit |
    |---|---|---|
    | 0 | x position | m |
    | 1 | y position | m |

    | action | meaning | range |
    |---|---|---|
    | 0, 1 | displacement in x, y (clipped) | [-0.1, 0.1] m |

    | task field | meaning | train/test | ood |
    |---|---|---|---|
    | goal_x_m, goal_y_m | goal position | U(-0.5, 0.5)^2 | 0.5 < max(abs) <= 1.0 |

    Start (0, 0). Reward ``-||s' - g||_2``; terminated when ``|s' - g| < 0.01``
    on both axes; horizon 100 (registered ``max_episode_steps``). ``info``
    holds ``reward_dist`` (the reward) and ``distance_m``.

    References: Finn et al. 2017 (MAML), 2-D navigation.
    """

    metadata: dict[str, Any] = {
        "render_modes": ["rgb_array"],
        "render_fps": 20,
        # what the picture's markers are (label, marker, RGB), for video legends
        "render_legend": (("goal", "disc", GOAL_RGB), ("agent", "disc", AGENT_RGB), ("path", "line", PATH_RGB)),
    }
    task_class: ClassVar[type[Task]] = Point2DNavTask

    def __init__(self, task: Task | None = None, render_mode: str | None = None) -> None:
        super().__init__(task)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)
        self.action_space = gym.spaces.Box(-ACTION_LIMIT_M, ACTION_LIMIT_M, shape=(2,), dtype=np.float64)
        self._position = np.zeros(2)
        self._path: list[np.ndarray] = []

    @classmethod
    def default_task(cls) -> Task:
        return Point2DNavTask(0.0, 0.0)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        self._begin_reset(seed, options)
        self._position = np.zeros(2)
        self._path = [self._position.copy()]
        return self._position.copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = check_action(action, self.action_space.shape)
        position, reward, terminated = _step_points(
            self._position[None], action[None], self.task.goal[None]
        )
        self._position = position[0]
        self._path.append(self._position.copy())
        info = {"reward_dist": float(reward[0]), "distance_m": float(-reward[0])}
        return self._position.copy(), float(reward[0]), bool(terminated[0]), False, info

    def render(self) -> np.ndarray | None:
        """A 2-D picture: grid, goal (green), path (grey) and agent (blue)."""
        if self.render_mode != "rgb_array":
            return None
        return draw_point_scene(np.array(self._path), self.task.goal)


def draw_point_scene(path: np.ndarray, goal: np.ndarray, size: int = 256) -> np.ndarray:
    """Raster picture of a Point2DNav episode, ``[size, size, 3]`` uint8, extent ±1.2 m."""
    extent = 1.2
    image = np.full((size, size, 3), 255, dtype=np.uint8)

    def to_pixel(xy: np.ndarray) -> np.ndarray:
        scaled = (np.asarray(xy) + extent) / (2 * extent) * (size - 1)
        return np.stack([size - 1 - scaled[..., 1], scaled[..., 0]], axis=-1).round().astype(int)

    for line in np.arange(-1.0, 1.01, 0.5):  # grid every 0.5 m
        row, col = to_pixel(np.array([line, line]))
        color = 170 if abs(line) < 1e-9 else 225
        image[np.clip(row, 0, size - 1), :] = color
        image[:, np.clip(col, 0, size - 1)] = color
    rows, cols = np.mgrid[0:size, 0:size]

    def disc(center: np.ndarray, radius: int, color: tuple[int, int, int]) -> None:
        r, c = to_pixel(center)
        image[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = color

    disc(goal, 7, GOAL_RGB)
    if len(path) > 1:  # densely sampled segments make a line
        dense = np.concatenate([np.linspace(a, b, 8) for a, b in zip(path[:-1], path[1:], strict=True)])
        pixels = np.clip(to_pixel(dense), 0, size - 1)
        image[pixels[:, 0], pixels[:, 1]] = PATH_RGB
    disc(path[-1], 5, AGENT_RGB)
    return image


class Point2DNavVectorEnv(MetaVectorEnv):
    """Batched Point2DNav: every sub-env in one numpy operation per step."""

    task_class: ClassVar[type[Task]] = Point2DNavTask
    default_task = Point2DNavEnv.default_task

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = 100) -> None:
        super().__init__(num_envs, max_episode_steps)
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)
        self.single_action_space = gym.spaces.Box(
            -ACTION_LIMIT_M, ACTION_LIMIT_M, shape=(2,), dtype=np.float64
        )
        self._finish_init()
        self._positions = np.zeros((num_envs, 2))
        self._goals = np.zeros((num_envs, 2))

    def _reset_envs(self, index: np.ndarray) -> np.ndarray:
        self._positions[index] = 0.0
        self._goals[index] = [self.tasks[i].goal for i in index]
        return self._positions[index].copy()

    def _step_envs(
        self, actions: np.ndarray, index: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        positions, reward, terminated = _step_points(self._positions[index], actions, self._goals[index])
        self._positions[index] = positions
        unstable = np.zeros(index.size, dtype=bool)
        return positions.copy(), reward, terminated, unstable, {"reward_dist": reward, "distance_m": -reward}

