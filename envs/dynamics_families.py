"""Dynamics families: the goal stays the same, the robot changes from task to task.

- ``*RandParams`` (HalfCheetah, Hopper, Walker2d): every element of
  ``body_mass``, ``body_inertia``, ``dof_damping`` and ``geom_friction`` is scaled
  by its own log-uniform multiplier, as in rand_param_envs (used by ProMP and
  PEARL). The task holds the multipliers; ``set_task`` applies them to copies of
  the nominal arrays kept at construction (``model.body_mass`` is a live view),
  so applying a task twice equals applying it once. After scaling, MuJoCo's
  ``mj_setConst`` recomputes the constants derived from the masses.
- ``*Crippled`` (HalfCheetah, Ant): one actuator (HalfCheetah) or one leg's two
  actuators (Ant) are disabled: their control is multiplied by 0. The control
  cost is charged on the commanded action. ``-1`` is the intact robot (the
  default task; never sampled).

Randomisers are small pure functions with their distribution in a comment.

References: Clavera et al. / Rothfuss et al. 2019 (ProMP) and Rakelly et al.
2019 (PEARL), both via jonasrothfuss/rand_param_envs; Nagabandi et al. 2019,
"Learning to Adapt in Dynamic, Real-World Environments through
Meta-Reinforcement Learning" (crippled ant and half-cheetah).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from metarl_envs.goal_families import ant_v5_reward
from metarl_envs.mujoco_core import (
    ANT,
    HALF_CHEETAH,
    HOPPER,
    WALKER2D,
    FamilyDef,
    LocomotionEnv,
    LocomotionVectorEnv,
    StepBatch,
    ctrl_reward,
)
from metarl_envs.tasks import Task, TaskDistribution, check_choice, check_vector

# ----------------------------------------------------------------------------
# Randomised parameters
# ----------------------------------------------------------------------------

# field -> base of the multiplier base ** exponent
MULTIPLIER_BASE = {"body_mass": 1.5, "body_inertia": 1.5, "dof_damping": 1.3, "geom_friction": 1.5}
TRAIN_EXPONENT = 3.0  # train/test exponents ~ U(-3, 3)
OOD_EXPONENT = 4.5  # ood exponents ~ U(-4.5, -3) or U(3, 4.5)
_SLACK = 1e-9  # relative float slack on the domain bounds


def multiplier_bounds(field: str, exponent: float = OOD_EXPONENT) -> tuple[float, float]:
    """``(base ** -exponent, base ** exponent)`` of ``field``'s multipliers."""
    base = MULTIPLIER_BASE[field]
    return float(base**-exponent), float(base**exponent)


def sample_train_multipliers(rng: np.random.Generator, field: str, size: int) -> np.ndarray:
    # multiplier: base ** U(-3, 3), per element (base 1.5; 1.3 for dof_damping)
    return MULTIPLIER_BASE[field] ** rng.uniform(-TRAIN_EXPONENT, TRAIN_EXPONENT, size=size)


def sample_ood_multipliers(rng: np.random.Generator, field: str, size: int) -> np.ndarray:
    # multiplier: base ** (s * U(3, 4.5)), s = -1 or +1 with p = 0.5, per element
    magnitude = rng.uniform(TRAIN_EXPONENT, OOD_EXPONENT, size=size)
    sign = rng.choice(np.array([-1.0, 1.0]), size=size)
    return MULTIPLIER_BASE[field] ** (sign * magnitude)


@dataclasses.dataclass(frozen=True)
class _RandParamsTask(Task):
    """Per-element multipliers of the nominal model parameters (dimensionless).

    ``body_inertia_multiplier`` and ``geom_friction_multiplier`` are the row-major
    flattening of the ``[nbody, 3]`` and ``[ngeom, 3]`` arrays.
    """

    body_mass_multiplier: tuple[float, ...]
    body_inertia_multiplier: tuple[float, ...]
    dof_damping_multiplier: tuple[float, ...]
    geom_friction_multiplier: tuple[float, ...]
    #: model field -> shape, per robot
    shapes: ClassVar[dict[str, tuple[int, ...]]] = {}

    def validate(self) -> None:
        for field, shape in self.shapes.items():
            low, high = multiplier_bounds(field)
            check_vector(f"{field}_multiplier", getattr(self, f"{field}_multiplier"),
                         int(np.prod(shape)), low * (1 - _SLACK), high * (1 + _SLACK))

    @classmethod
    def nominal(cls) -> _RandParamsTask:
        """The unmodified robot (every multiplier 1)."""
        return cls(**{f"{field}_multiplier": (1.0,) * int(np.prod(shape))
                      for field, shape in cls.shapes.items()})

    def multipliers(self) -> dict[str, np.ndarray]:
        """Model field -> multipliers shaped like the field."""
        return {field: np.asarray(getattr(self, f"{field}_multiplier")).reshape(shape)
                for field, shape in self.shapes.items()}


def _shapes(nbody: int, nv: int, ngeom: int) -> dict[str, tuple[int, ...]]:
    return {"body_mass": (nbody,), "body_inertia": (nbody, 3), "dof_damping": (nv,),
            "geom_friction": (ngeom, 3)}


@dataclasses.dataclass(frozen=True)
class HalfCheetahRandParamsTask(_RandParamsTask):
    family: ClassVar[str] = "HalfCheetahRandParams"
    shapes: ClassVar[dict[str, tuple[int, ...]]] = _shapes(nbody=8, nv=9, ngeom=9)


@dataclasses.dataclass(frozen=True)
class HopperRandParamsTask(_RandParamsTask):
    family: ClassVar[str] = "HopperRandParams"
    shapes: ClassVar[dict[str, tuple[int, ...]]] = _shapes(nbody=5, nv=6, ngeom=5)


@dataclasses.dataclass(frozen=True)
class Walker2dRandParamsTask(_RandParamsTask):
    family: ClassVar[str] = "Walker2dRandParams"
    shapes: ClassVar[dict[str, tuple[int, ...]]] = _shapes(nbody=8, nv=9, ngeom=8)


class _RandParamsDistribution(TaskDistribution):
    """Multipliers base ** U(-3, 3) per element; ood base ** U(-4.5, -3) U U(3, 4.5)."""

    def _sample(self, n: int, split: str, rng: np.random.Generator) -> list[Task]:
        sampler = sample_ood_multipliers if split == "ood" else sample_train_multipliers
        tasks = []
        for _ in range(n):
            values = {f"{field}_multiplier": tuple(sampler(rng, field, int(np.prod(shape))).tolist())
                      for field, shape in self.task_class.shapes.items()}
            tasks.append(self.task_class(**values))
        return tasks

    def describe(self) -> dict[str, Any]:
        parameters = {}
        for field, shape in self.task_class.shapes.items():
            low, high = multiplier_bounds(field)
            parameters[f"{field}_multiplier"] = (
                f"{int(np.prod(shape))} multipliers of {field} {list(shape)}, "
                f"{MULTIPLIER_BASE[field]}^e, domain [{low:.3g}, {high:.3g}]")
        return {
            "varies": "dynamics (masses, inertias, damping, friction)",
            "parameters": parameters,
            "splits": {"train": "e ~ U(-3, 3) per element (base 1.5; 1.3 for damping)",
                       "test": "e ~ U(-3, 3) per element (a disjoint random stream)",
                       "ood": "e ~ U(-4.5, -3) or U(3, 4.5) per element, p = 0.5 each"},
        }


class HalfCheetahRandParamsDistribution(_RandParamsDistribution):
    family: ClassVar[str] = "HalfCheetahRandParams"
    task_class: ClassVar[type[Task]] = HalfCheetahRandParamsTask


class HopperRandParamsDistribution(_RandParamsDistribution):
    family: ClassVar[str] = "HopperRandParams"
    task_class: ClassVar[type[Task]] = HopperRandParamsTask


class Walker2dRandParamsDistribution(_RandParamsDistribution):
    family: ClassVar[str] = "Walker2dRandParams"
    task_class: ClassVar[type[Task]] = Walker2dRandParamsTask


# ----------------------------------------------------------------------------
# Crippled robots
# ----------------------------------------------------------------------------

INTACT = -1
CHEETAH_TRAIN_ACTUATORS = (0, 1, 2, 3)
CHEETAH_OOD_ACTUATORS = (4, 5)
ANT_TRAIN_LEGS = (0, 1, 2)
ANT_OOD_LEGS = (3,)
#: Ant leg k is driven by the actuators of joints hip_{k+1} and ankle_{k+1}
ANT_LEG_JOINTS = (("hip_1", "ankle_1"), ("hip_2", "ankle_2"), ("hip_3", "ankle_3"), ("hip_4", "ankle_4"))
ANT_LEG_NAMES = ("front left", "front right", "back left", "back right")


@dataclasses.dataclass(frozen=True)
class HalfCheetahCrippledTask(Task):
    """Index of the disabled actuator (0-5 in actuator order), -1 for none."""

    crippled_actuator: int
    family: ClassVar[str] = "HalfCheetahCrippled"

    def validate(self) -> None:
        check_choice("crippled_actuator", self.crippled_actuator,
                     (INTACT, *CHEETAH_TRAIN_ACTUATORS, *CHEETAH_OOD_ACTUATORS))
        object.__setattr__(self, "crippled_actuator", int(self.crippled_actuator))


@dataclasses.dataclass(frozen=True)
class AntCrippledTask(Task):
    """Index of the disabled leg (0-3, see ``ANT_LEG_JOINTS``), -1 for none."""

    crippled_leg: int
    family: ClassVar[str] = "AntCrippled"

    def validate(self) -> None:
        check_choice("crippled_leg", self.crippled_leg, (INTACT, *ANT_TRAIN_LEGS, *ANT_OOD_LEGS))
        object.__setattr__(self, "crippled_leg", int(self.crippled_leg))


def sample_index(rng: np.random.Generator, n: int, choices: Sequence[int]) -> np.ndarray:
    # index: uniform over choices
    return rng.choice(np.array(choices), size=n)


class HalfCheetahCrippledDistribution(TaskDistribution):
    """Disabled actuator: train/test uniform on 0-3, ood uniform on 4-5."""

    family: ClassVar[str] = "HalfCheetahCrippled"
    task_class: ClassVar[type[Task]] = HalfCheetahCrippledTask

    def _sample(self, n: int, split: str, rng: np.random.Generator) -> list[Task]:
        choices = CHEETAH_OOD_ACTUATORS if split == "ood" else CHEETAH_TRAIN_ACTUATORS
        return [HalfCheetahCrippledTask(int(k)) for k in sample_index(rng, n, choices)]

    def describe(self) -> dict[str, Any]:
        return {
            "varies": "dynamics: one disabled actuator",
            "parameters": {"crippled_actuator": "disabled actuator 0-5 (bthigh, bshin, bfoot, "
                                                "fthigh, fshin, ffoot); -1 = intact"},
            "splits": {"train": "uniform on actuators 0-3",
                       "test": "uniform on actuators 0-3 (a disjoint random stream)",
                       "ood": "uniform on actuators 4-5"},
        }


class AntCrippledDistribution(TaskDistribution):
    """Disabled leg: train/test uniform on legs 0-2, ood leg 3."""

    family: ClassVar[str] = "AntCrippled"
    task_class: ClassVar[type[Task]] = AntCrippledTask

    def _sample(self, n: int, split: str, rng: np.random.Generator) -> list[Task]:
        choices = ANT_OOD_LEGS if split == "ood" else ANT_TRAIN_LEGS
        return [AntCrippledTask(int(k)) for k in sample_index(rng, n, choices)]

    def describe(self) -> dict[str, Any]:
        legs = ", ".join(f"{k} {name}" for k, name in enumerate(ANT_LEG_NAMES))
        return {
            "varies": "dynamics: one disabled leg (both its actuators)",
            "parameters": {"crippled_leg": f"disabled leg ({legs}); -1 = intact"},
            "splits": {"train": "uniform on legs 0-2",
                       "test": "uniform on legs 0-2 (a disjoint random stream)",
                       "ood": "leg 3"},
        }


def _cheetah_mask(task: Task, joint_names: tuple[str, ...]) -> np.ndarray:
    mask = np.ones(len(joint_names))
    if task.crippled_actuator != INTACT:
        mask[task.crippled_actuator] = 0.0
    return mask


def _ant_mask(task: Task, joint_names: tuple[str, ...]) -> np.ndarray:
    mask = np.ones(len(joint_names))
    if task.crippled_leg != INTACT:
        for joint in ANT_LEG_JOINTS[task.crippled_leg]:
            mask[joint_names.index(joint)] = 0.0
    return mask


# ----------------------------------------------------------------------------
# Rewards (batched) and family definitions
# ----------------------------------------------------------------------------


def _cheetah_v5_reward(step: StepBatch, params: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
    # HalfCheetah-v5: v_x - 0.1 ||a||^2
    forward, ctrl = step.velocity[:, 0], ctrl_reward(step.action, 0.1)
    return forward + ctrl, {"reward_forward": forward, "reward_ctrl": ctrl}


def _walker_v5_reward(step: StepBatch, params: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
    # Hopper-v5 / Walker2d-v5: v_x + 1.0 [healthy] - 1e-3 ||a||^2
    forward, ctrl = step.velocity[:, 0], ctrl_reward(step.action, 1e-3)
    survive = step.healthy.astype(np.float64)
    return forward + survive + ctrl, {"reward_forward": forward, "reward_ctrl": ctrl,
                                      "reward_survive": survive}


def _crippled_cheetah_reward(step: StepBatch, params: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
    # v_x - 0.05 ||a||^2
    forward, ctrl = step.velocity[:, 0], ctrl_reward(step.action, 0.05)
    return forward + ctrl, {"reward_forward": forward, "reward_ctrl": ctrl}


def _ant_forward_reward(step: StepBatch, params: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
    return ant_v5_reward(step, step.velocity[:, 0])


def _no_arrays(tasks: Sequence[Task]) -> dict[str, np.ndarray]:
    return {}  # dynamics families: the task acts through the model, not the reward


def _multipliers(task: Task) -> dict[str, np.ndarray]:
    return task.multipliers()


HALF_CHEETAH_RAND_PARAMS = FamilyDef(HALF_CHEETAH, HalfCheetahRandParamsTask,
                                     HalfCheetahRandParamsTask.nominal(), _no_arrays,
                                     _cheetah_v5_reward, model_multipliers=_multipliers)
HOPPER_RAND_PARAMS = FamilyDef(HOPPER, HopperRandParamsTask, HopperRandParamsTask.nominal(),
                               _no_arrays, _walker_v5_reward, terminate_when_unhealthy=True,
                               model_multipliers=_multipliers)
WALKER2D_RAND_PARAMS = FamilyDef(WALKER2D, Walker2dRandParamsTask, Walker2dRandParamsTask.nominal(),
                                 _no_arrays, _walker_v5_reward, terminate_when_unhealthy=True,
                                 model_multipliers=_multipliers)
HALF_CHEETAH_CRIPPLED = FamilyDef(HALF_CHEETAH, HalfCheetahCrippledTask,
                                  HalfCheetahCrippledTask(INTACT), _no_arrays,
                                  _crippled_cheetah_reward, ctrl_mask=_cheetah_mask)
ANT_CRIPPLED = FamilyDef(ANT, AntCrippledTask, AntCrippledTask(INTACT), _no_arrays,
                         _ant_forward_reward, terminate_when_unhealthy=True, ctrl_mask=_ant_mask)

_RAND_TASK_TABLE = """
    | task field | meaning | train/test | ood |
    |---|---|---|---|
    | body_mass_multiplier | per body | 1.5^U(-3, 3) | 1.5^U(-4.5, -3) or 1.5^U(3, 4.5) |
    | body_inertia_multiplier | per body and axis | 1.5^U(-3, 3) | 1.5^U(-4.5, -3) or 1.5^U(3, 4.5) |
    | dof_damping_multiplier | per dof | 1.3^U(-3, 3) | 1.3^U(-4.5, -3) or 1.3^U(3, 4.5) |
    | geom_friction_multiplier | per geom and component | 1.5^U(-3, 3) | 1.5^U(-4.5, -3) or 1.5^U(3, 4.5) |
"""


class HalfCheetahRandParamsEnv(LocomotionEnv):
    __doc__ = """HalfCheetah-v5 with randomised masses, inertias, damping and friction.

    Observation (17) and action (6) exactly as HalfCheetah-v5: positions without x
    (rootz, rooty, 6 joint angles), then the 9 velocities; torques in [-1, 1].
    frame_skip 5, reset noise qpos + U(-0.1, 0.1), qvel + 0.1 N(0, 1); never terminates.
""" + _RAND_TASK_TABLE + """
    Reward HalfCheetah-v5's: ``v_x - 0.1 ||a||^2``; ``info``: ``reward_forward``,
    ``reward_ctrl``, ``x_velocity``, ``sim_unstable``.

    References: rand_param_envs (ProMP, PEARL); Gymnasium HalfCheetah-v5.
    """
    family_def = HALF_CHEETAH_RAND_PARAMS


class HalfCheetahRandParamsVectorEnv(LocomotionVectorEnv):
    """Batched HalfCheetahRandParams (see :class:`HalfCheetahRandParamsEnv`)."""

    family_def = HALF_CHEETAH_RAND_PARAMS


class HopperRandParamsEnv(LocomotionEnv):
    __doc__ = """Hopper-v5 with randomised masses, inertias, damping and friction.

    | observation | meaning | unit |
    |---|---|---|
    | 0 | rootz (torso height) | m |
    | 1 | rooty (torso pitch) | rad |
    | 2-4 | thigh, leg, foot angles | rad |
    | 5-10 | velocities of rootx, rootz, rooty, thigh, leg, foot, clipped to [-10, 10] | m/s, rad/s |

    | action | meaning | range |
    |---|---|---|
    | 0-2 | torques of thigh, leg, foot | [-1, 1] |

    Hopper-v5 physics: hopper.xml, frame_skip 4 (dt 0.008 s), reset noise U(-5e-3, 5e-3)
    on qpos and qvel; healthy when z > 0.7, |pitch| < 0.2 and every entry of
    (qpos[2:], qvel) in (-100, 100); terminates when unhealthy.
""" + _RAND_TASK_TABLE + """
    Reward Hopper-v5's: ``v_x + 1.0 [healthy] - 1e-3 ||a||^2``; ``info``: ``reward_forward``,
    ``reward_ctrl``, ``reward_survive``, ``x_velocity``, ``sim_unstable``.

    References: rand_param_envs (ProMP, PEARL); Gymnasium Hopper-v5.
    """
    family_def = HOPPER_RAND_PARAMS


class HopperRandParamsVectorEnv(LocomotionVectorEnv):
    """Batched HopperRandParams (see :class:`HopperRandParamsEnv`)."""

    family_def = HOPPER_RAND_PARAMS


class Walker2dRandParamsEnv(LocomotionEnv):
    __doc__ = """Walker2d-v5 with randomised masses, inertias, damping and friction.

    | observation | meaning | unit |
    |---|---|---|
    | 0 | rootz (torso height) | m |
    | 1 | rooty (torso pitch) | rad |
    | 2-7 | right thigh, leg, foot, left thigh, leg, foot angles | rad |
    | 8-16 | velocities of rootx, rootz, rooty and the 6 joints, clipped to [-10, 10] | m/s, rad/s |

    | action | meaning | range |
    |---|---|---|
    | 0-5 | torques of the 6 joints | [-1, 1] |

    Walker2d-v5 physics: walker2d_v5.xml, frame_skip 4 (dt 0.008 s), reset noise
    U(-5e-3, 5e-3) on qpos and qvel; healthy when 0.8 < z < 2 and |pitch| < 1;
    terminates when unhealthy.
""" + _RAND_TASK_TABLE + """
    Reward Walker2d-v5's: ``v_x + 1.0 [healthy] - 1e-3 ||a||^2``; ``info``: ``reward_forward``,
    ``reward_ctrl``, ``reward_survive``, ``x_velocity``, ``sim_unstable``.

    References: rand_param_envs (ProMP, PEARL); Gymnasium Walker2d-v5.
    """
    family_def = WALKER2D_RAND_PARAMS


class Walker2dRandParamsVectorEnv(LocomotionVectorEnv):
    """Batched Walker2dRandParams (see :class:`Walker2dRandParamsEnv`)."""

    family_def = WALKER2D_RAND_PARAMS


class HalfCheetahCrippledEnv(LocomotionEnv):
    """HalfCheetah with one disabled actuator (its control multiplied by 0).

    Observation (17) and action (6) exactly as HalfCheetah-v5 (positions without x,
    then velocities; torques of bthigh, bshin, bfoot, fthigh, fshin, ffoot in
    [-1, 1]); frame_skip 5, reset noise as HalfCheetah-v5; never terminates.

    | task field | meaning | train/test | ood |
    |---|---|---|---|
    | crippled_actuator | disabled actuator (-1 none) | uniform on 0-3 | uniform on 4-5 |

    Reward ``v_x - 0.05 ||a||^2`` on the commanded action; ``info``: ``reward_forward``,
    ``reward_ctrl``, ``x_velocity``, ``sim_unstable``.

    References: Nagabandi et al. 2019 (crippled half-cheetah); Gymnasium HalfCheetah-v5.
    """

    family_def = HALF_CHEETAH_CRIPPLED


class HalfCheetahCrippledVectorEnv(LocomotionVectorEnv):
    """Batched HalfCheetahCrippled (see :class:`HalfCheetahCrippledEnv`)."""

    family_def = HALF_CHEETAH_CRIPPLED


class AntCrippledEnv(LocomotionEnv):
    """Ant with one disabled leg (both actuators of the leg multiplied by 0).

    Observation (105) and action (8) as Ant-v5 (see :class:`metarl_envs.goal_families.AntDirEnv`
    for the tables); frame_skip 5, reset noise as Ant-v5, terminates when unhealthy.

    | task field | meaning | train/test | ood |
    |---|---|---|---|
    | crippled_leg | disabled leg: 0 front left (hip_1, ankle_1), 1 front right, 2 back left, 3 back right; -1 none | uniform on 0-2 | 3 |

    Reward Ant-v5's: ``v_x + 1.0 [healthy] - 0.5 ||a||^2 - 5e-4 ||clip(cfrc_ext)||^2``
    on the commanded action; ``info``: ``reward_forward``, ``reward_ctrl``,
    ``reward_contact``, ``reward_survive``, ``x_velocity``, ``y_velocity``, ``sim_unstable``.

    References: Nagabandi et al. 2019 (crippled ant); Gymnasium Ant-v5.
    """

    family_def = ANT_CRIPPLED


class AntCrippledVectorEnv(LocomotionVectorEnv):
    """Batched AntCrippled (see :class:`AntCrippledEnv`)."""

    family_def = ANT_CRIPPLED
