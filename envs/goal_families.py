"""Goal families: the robot stays the same, the goal changes from task to task.

HalfCheetahVel (goal velocity), HalfCheetahDir and AntDir (running direction)
are the MAML paper's locomotion tasks; AntGoal (goal position) is the ProMP /
PEARL ant-goal task. Each family is a task dataclass, a distribution with pure
sampling functions, a batched reward, and a :class:`~metarl_envs.mujoco_core.FamilyDef`;
the env classes are thin subclasses of the shared machinery.

References: Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for Fast
Adaptation of Deep Networks" (code cbfinn/maml_rl: half_cheetah_env_rand,
half_cheetah_env_rand_direc, ant_env_rand_direc); Rothfuss et al. 2019 (ProMP);
Rakelly et al. 2019 (PEARL, ant-goal).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from metarl_envs.mujoco_core import (
    ANT,
    HALF_CHEETAH,
    FamilyDef,
    LocomotionEnv,
    LocomotionVectorEnv,
    StepBatch,
    contact_reward,
    ctrl_reward,
)
from metarl_envs.tasks import Task, TaskDistribution, check_choice, check_range

DIRECTIONS = (-1, 1)
_DIR_NO_OOD = ("a running direction is -1 or +1 and both are in the training support, so no "
               "direction lies outside it")


# ----------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------

VEL_TRAIN_MPS = (0.0, 2.0)
VEL_OOD_MPS = (2.0, 3.0)


@dataclasses.dataclass(frozen=True)
class HalfCheetahVelTask(Task):
    """Target forward velocity in m/s."""

    goal_velocity_mps: float
    family: ClassVar[str] = "HalfCheetahVel"

    def validate(self) -> None:
        check_range("goal_velocity_mps", self.goal_velocity_mps, VEL_TRAIN_MPS[0], VEL_OOD_MPS[1])


@dataclasses.dataclass(frozen=True)
class _DirectionTask(Task):
    """Running direction along x: +1 forward, -1 backward."""

    direction_sign: int

    def validate(self) -> None:
        check_choice("direction_sign", self.direction_sign, DIRECTIONS)
        object.__setattr__(self, "direction_sign", int(self.direction_sign))


@dataclasses.dataclass(frozen=True)
class HalfCheetahDirTask(_DirectionTask):
    family: ClassVar[str] = "HalfCheetahDir"


@dataclasses.dataclass(frozen=True)
class AntDirTask(_DirectionTask):
    family: ClassVar[str] = "AntDir"


GOAL_TRAIN_RADIUS_M = 3.0
GOAL_OOD_RADIUS_M = 4.0


@dataclasses.dataclass(frozen=True)
class AntGoalTask(Task):
    """Goal position of the torso in the plane, metres."""

    goal_x_m: float
    goal_y_m: float
    family: ClassVar[str] = "AntGoal"

    def validate(self) -> None:
        r = GOAL_OOD_RADIUS_M
        check_range("goal_x_m", self.goal_x_m, -r, r)
        check_range("goal_y_m", self.goal_y_m, -r, r)
        radius = math.hypot(self.goal_x_m, self.goal_y_m)
        if radius > r + 1e-12:
            raise ValueError(
                f"goal radius sqrt(goal_x_m^2 + goal_y_m^2) must lie in [0, {r}], got {radius!r}"
            )


# ----------------------------------------------------------------------------
# Pure samplers (distribution in the comment)
# ----------------------------------------------------------------------------


def sample_velocity(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    # goal velocity: U(low, high) m/s
    return rng.uniform(low, high, size=n)


def sample_direction(rng: np.random.Generator, n: int) -> np.ndarray:
    # direction: -1 or +1, p = 0.5 each
    return rng.choice(np.array(DIRECTIONS), size=n)


def sample_disc_goal(rng: np.random.Generator, n: int, inner: float, outer: float) -> np.ndarray:
    # goal: uniform in area on the annulus inner <= r <= outer (a disc when inner = 0)
    radius = np.sqrt(rng.uniform(inner**2, outer**2, size=n))
    angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)


class HalfCheetahVelDistribution(TaskDistribution):
    """Goal velocity: train/test U(0, 2) m/s, ood U(2, 3) m/s."""

    family: ClassVar[str] = "HalfCheetahVel"
    task_class: ClassVar[type[Task]] = HalfCheetahVelTask

    def _sample(self, n: int, split: str, rng: np.random.Generator) -> list[Task]:
        low, high = VEL_OOD_MPS if split == "ood" else VEL_TRAIN_MPS
        return [HalfCheetahVelTask(float(v)) for v in sample_velocity(rng, n, low, high)]

    def describe(self) -> dict[str, Any]:
        return {
            "varies": "goal velocity",
            "parameters": {"goal_velocity_mps": "target forward velocity [m/s], domain [0, 3]"},
            "splits": {"train": "v* ~ U(0, 2)", "test": "v* ~ U(0, 2) (a disjoint random stream)",
                       "ood": "v* ~ U(2, 3)"},
        }


class _DirectionDistribution(TaskDistribution):
    no_ood_reason: ClassVar[str | None] = _DIR_NO_OOD

    def _sample(self, n: int, split: str, rng: np.random.Generator) -> list[Task]:
        return [self.task_class(int(d)) for d in sample_direction(rng, n)]

    def describe(self) -> dict[str, Any]:
        return {
            "varies": "running direction",
            "parameters": {"direction_sign": "+1 run forward (+x), -1 run backward"},
            "splits": {"train": "d in {-1, +1}, p = 0.5",
                       "test": "d in {-1, +1}, p = 0.5 (a disjoint random stream)",
                       "ood": f"none: {_DIR_NO_OOD}"},
        }


class HalfCheetahDirDistribution(_DirectionDistribution):
    """Direction d in {-1, +1}, p = 0.5; no ood split."""

    family: ClassVar[str] = "HalfCheetahDir"
    task_class: ClassVar[type[Task]] = HalfCheetahDirTask


class AntDirDistribution(_DirectionDistribution):
    """Direction d in {-1, +1}, p = 0.5; no ood split."""

    family: ClassVar[str] = "AntDir"
    task_class: ClassVar[type[Task]] = AntDirTask


class AntGoalDistribution(TaskDistribution):
    """Goal: train/test uniform on the disc of radius 3 m; ood on the ring 3 < r <= 4 m."""

    family: ClassVar[str] = "AntGoal"
    task_class: ClassVar[type[Task]] = AntGoalTask

    def _sample(self, n: int, split: str, rng: np.random.Generator) -> list[Task]:
        inner, outer = ((GOAL_TRAIN_RADIUS_M, GOAL_OOD_RADIUS_M) if split == "ood"
                        else (0.0, GOAL_TRAIN_RADIUS_M))
        goals = sample_disc_goal(rng, n, inner, outer)
        return [AntGoalTask(float(x), float(y)) for x, y in goals]

    def describe(self) -> dict[str, Any]:
        return {
            "varies": "goal position",
            "parameters": {"goal_x_m": "goal x [m]", "goal_y_m": "goal y [m]"},
            "splits": {"train": "g uniform on the disc ||g|| <= 3 m",
                       "test": "g uniform on the disc ||g|| <= 3 m (a disjoint random stream)",
                       "ood": "g uniform on the ring 3 < ||g|| <= 4 m"},
        }


# ----------------------------------------------------------------------------
# Rewards (batched: arrays with a leading sub-env dimension B)
# ----------------------------------------------------------------------------


def _velocity_reward(step: StepBatch, params: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
    # -|v_x - v*| - 0.05 ||a||^2  (MAML half_cheetah_env_rand)
    velocity_term = -np.abs(step.velocity[:, 0] - params["goal_velocity_mps"])
    ctrl = ctrl_reward(step.action, 0.05)
    return velocity_term + ctrl, {"reward_forward": velocity_term, "reward_ctrl": ctrl}


def _cheetah_direction_reward(step: StepBatch, params: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
    # d * v_x - 0.05 ||a||^2  (MAML half_cheetah_env_rand_direc)
    forward = params["direction_sign"] * step.velocity[:, 0]
    ctrl = ctrl_reward(step.action, 0.05)
    return forward + ctrl, {"reward_forward": forward, "reward_ctrl": ctrl}


def ant_v5_reward(step: StepBatch, forward: np.ndarray) -> tuple[np.ndarray, dict]:
    """Ant-v5's reward with a given forward term: forward + healthy 1.0 - 0.5||a||^2 - contact."""
    survive = step.healthy.astype(np.float64)
    ctrl = ctrl_reward(step.action, 0.5)
    contact = contact_reward(step.cfrc_ext)
    reward = forward + survive + ctrl + contact
    return reward, {"reward_forward": forward, "reward_ctrl": ctrl, "reward_contact": contact,
                    "reward_survive": survive}


def _ant_direction_reward(step: StepBatch, params: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
    return ant_v5_reward(step, params["direction_sign"] * step.velocity[:, 0])


def _ant_goal_reward(step: StepBatch, params: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
    # -||xy - g||_1 - 0.1 ||a||^2, xy = torso position
    goal = np.stack([params["goal_x_m"], params["goal_y_m"]], axis=1)
    distance = np.abs(step.qpos[:, :2] - goal).sum(axis=1)
    ctrl = ctrl_reward(step.action, 0.1)
    return -distance + ctrl, {"reward_goal": -distance, "reward_ctrl": ctrl, "distance_l1_m": distance}


def _fields(*names: str):
    def task_arrays(tasks: Sequence[Task]) -> dict[str, np.ndarray]:
        return {name: np.array([getattr(t, name) for t in tasks], dtype=np.float64) for name in names}
    return task_arrays


HALF_CHEETAH_VEL = FamilyDef(HALF_CHEETAH, HalfCheetahVelTask, HalfCheetahVelTask(1.0),
                             _fields("goal_velocity_mps"), _velocity_reward)
HALF_CHEETAH_DIR = FamilyDef(HALF_CHEETAH, HalfCheetahDirTask, HalfCheetahDirTask(1),
                             _fields("direction_sign"), _cheetah_direction_reward)
ANT_DIR = FamilyDef(ANT, AntDirTask, AntDirTask(1), _fields("direction_sign"),
                    _ant_direction_reward, terminate_when_unhealthy=True)
ANT_GOAL = FamilyDef(ANT, AntGoalTask, AntGoalTask(0.0, 0.0), _fields("goal_x_m", "goal_y_m"),
                     _ant_goal_reward)

_CHEETAH_TABLES = """
    | observation | meaning | unit |
    |---|---|---|
    | 0 | rootz (torso height) | m |
    | 1 | rooty (torso pitch) | rad |
    | 2-7 | bthigh, bshin, bfoot, fthigh, fshin, ffoot angles | rad |
    | 8, 9 | torso x, z velocity | m/s |
    | 10 | torso pitch rate | rad/s |
    | 11-16 | joint angular velocities | rad/s |

    | action | meaning | range |
    |---|---|---|
    | 0-5 | torques of bthigh, bshin, bfoot, fthigh, fshin, ffoot | [-1, 1] |

    HalfCheetah-v5 physics: half_cheetah.xml, frame_skip 5 (dt 0.05 s), reset noise
    qpos + U(-0.1, 0.1), qvel + 0.1 N(0, 1); never terminates (horizon 200).
"""

_ANT_TABLES = """
    | observation | meaning | unit |
    |---|---|---|
    | 0 | torso z | m |
    | 1-4 | torso orientation quaternion (w, x, y, z) | - |
    | 5-12 | hip and ankle angles of the 4 legs | rad |
    | 13-15 | torso linear velocity | m/s |
    | 16-18 | torso angular velocity | rad/s |
    | 19-26 | hip and ankle angular velocities | rad/s |
    | 27-104 | clip(cfrc_ext, -1, 1) of the 13 bodies (torque, force) | N m, N |

    | action | meaning | range |
    |---|---|---|
    | 0-7 | torques of hip_4, ankle_4, hip_1, ankle_1, hip_2, ankle_2, hip_3, ankle_3 | [-1, 1] |

    Ant-v5 physics: ant.xml, frame_skip 5 (dt 0.05 s), reset noise qpos + U(-0.1, 0.1),
    qvel + 0.1 N(0, 1); velocity from the torso's xpos as Ant-v5; healthy when the
    state is finite and 0.2 <= torso z <= 1.0. Contact forces are those of the last
    substep (see metarl_envs.mujoco_core).
"""


class HalfCheetahVelEnv(LocomotionEnv):
    __doc__ = """HalfCheetah that must run at a goal velocity.
""" + _CHEETAH_TABLES + """
    | task field | meaning | train/test | ood |
    |---|---|---|---|
    | goal_velocity_mps | target forward velocity | U(0, 2) m/s | U(2, 3) m/s |

    Reward ``-|v_x - v*| - 0.05 ||a||^2``; ``info``: ``reward_forward`` (the velocity
    term), ``reward_ctrl``, ``x_velocity``, ``sim_unstable``.

    References: Finn et al. 2017 (MAML), cbfinn/maml_rl half_cheetah_env_rand.
    """
    family_def = HALF_CHEETAH_VEL


class HalfCheetahVelVectorEnv(LocomotionVectorEnv):
    """Batched HalfCheetahVel (see :class:`HalfCheetahVelEnv`)."""

    family_def = HALF_CHEETAH_VEL


class HalfCheetahDirEnv(LocomotionEnv):
    __doc__ = """HalfCheetah that must run forward or backward.
""" + _CHEETAH_TABLES + """
    | task field | meaning | train/test | ood |
    |---|---|---|---|
    | direction_sign | +1 forward, -1 backward | {-1, +1}, p = 0.5 | none (both are in training) |

    Reward ``d * v_x - 0.05 ||a||^2``; ``info``: ``reward_forward``, ``reward_ctrl``,
    ``x_velocity``, ``sim_unstable``.

    References: Finn et al. 2017 (MAML), cbfinn/maml_rl half_cheetah_env_rand_direc.
    """
    family_def = HALF_CHEETAH_DIR


class HalfCheetahDirVectorEnv(LocomotionVectorEnv):
    """Batched HalfCheetahDir (see :class:`HalfCheetahDirEnv`)."""

    family_def = HALF_CHEETAH_DIR


class AntDirEnv(LocomotionEnv):
    __doc__ = """Ant that must run forward or backward along x.
""" + _ANT_TABLES + """
    | task field | meaning | train/test | ood |
    |---|---|---|---|
    | direction_sign | +1 forward, -1 backward | {-1, +1}, p = 0.5 | none (both are in training) |

    Reward: Ant-v5's with the forward term ``d * v_x``: ``d v_x + 1.0 [healthy]
    - 0.5 ||a||^2 - 5e-4 ||clip(cfrc_ext)||^2``; terminates when unhealthy.
    ``info``: ``reward_forward``, ``reward_ctrl``, ``reward_contact``, ``reward_survive``,
    ``x_velocity``, ``y_velocity``, ``sim_unstable``.

    References: Finn et al. 2017 (MAML), cbfinn/maml_rl ant_env_rand_direc; Gymnasium Ant-v5.
    """
    family_def = ANT_DIR


class AntDirVectorEnv(LocomotionVectorEnv):
    """Batched AntDir (see :class:`AntDirEnv`)."""

    family_def = ANT_DIR


class AntGoalEnv(LocomotionEnv):
    __doc__ = """Ant that must walk to a goal position in the plane.
""" + _ANT_TABLES + """
    | task field | meaning | train/test | ood |
    |---|---|---|---|
    | goal_x_m, goal_y_m | goal position | uniform on the disc r <= 3 m | ring 3 < r <= 4 m |

    Reward ``-||xy - g||_1 - 0.1 ||a||^2`` with ``xy`` the torso position; never
    terminates (no health check). ``info``: ``reward_goal``, ``reward_ctrl``,
    ``distance_l1_m``, ``x_velocity``, ``y_velocity``, ``sim_unstable``.

    References: Rothfuss et al. 2019 (ProMP), Rakelly et al. 2019 (PEARL) ant-goal.
    """
    family_def = ANT_GOAL


class AntGoalVectorEnv(LocomotionVectorEnv):
    """Batched AntGoal (see :class:`AntGoalEnv`)."""

    family_def = ANT_GOAL
