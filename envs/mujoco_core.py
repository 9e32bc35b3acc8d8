"""The MuJoCo machinery shared by every MuJoCo family, single and batched.

A family is a small :class:`FamilyDef` (its robot, task class, per-task
parameter arrays, a batched reward function, and optionally a control mask
and model-field multipliers). This module turns it into

- :class:`LocomotionEnv`, the single gymnasium env (one ``MjData``, ``mj_step``), and
- :class:`LocomotionVectorEnv`, the batched vector env: every sub-env lives in
  one ``mujoco.batch.Batch`` and all of them advance in ONE native call per
  env step (``Batch.step(nstep=frame_skip)``, a persistent thread pool).

Both envs compute observations, health, rewards and instability with the SAME
batched numpy functions (:func:`observe`, :func:`healthy`, :func:`finish_step`);
the single env calls them with a batch of one, so the two cannot drift apart.

Why ``mujoco.batch`` rather than ``mujoco.rollout``: a Batch row is the full
``mjSTATE_INTEGRATION`` state, constraint warm-start included, and its results
are bit-identical to a loop over one ``MjData`` per simulation; ``rollout``
restarts every call from a zero warm-start and returns no derived quantities
(body positions, contact forces). With Batch the vector env equals the single
env to the last bit, and it is also faster (measured by ``metarl bench envs``).
Per-task dynamics use ``Batch.expand`` (per-simulation copies of the few model
fields a task changes) instead of one ``MjModel`` per task: the same physics,
less memory.

Models are loaded from gymnasium's installed assets (never copied). Choices
that follow gymnasium's v5 envs exactly: frame_skip, reset noise (its order and
distributions), observation layout (positions without the global x (and y),
velocities, Hopper/Walker velocity clipping, Ant's clipped external contact
forces), health ranges and termination, ``dt``-based forward velocity (Ant: the
torso's ``xpos``, one substep behind, as Ant-v5). One deliberate difference:
Ant's contact forces are MuJoCo's ``cfrc_ext`` computed inside the last substep
(an accelerometer probe on the torso makes ``mj_step`` run
``mj_rnePostConstraint``), i.e. the forces that acted during that substep.
Ant-v5 instead calls ``mj_rnePostConstraint`` after ``mj_step``, which mixes
pre- and post-integration quantities and cannot be reproduced by a batched
stepper; everything else in Ant's observation matches Ant-v5 exactly.

Actions are clipped to the action space (the actuators' control range) before
they are applied and before the control cost is charged: the physics is that
of the clipped action anyway (MuJoCo clamps the control), so the reward is
too. An action of 1e6 and one of 1e200 are both the action at the bound, with
its cost. (gymnasium's v5 envs charge the cost of the unclipped action, so an
out-of-range action cost up to -inf there and here before; in-range actions,
all that metarl's samplers send since they clip first, are unchanged.)

Physics instability (non-finite state or reward, or MuJoCo's bad-qpos /
bad-qvel / bad-qacc warnings, after which MuJoCo silently resets the data)
truncates the episode with ``info["sim_unstable"] = True``; the observation is
made finite and the reward is 0 on that step.

References: Todorov et al. 2012 (MuJoCo); Towers et al. 2024 (Gymnasium,
``gymnasium/envs/mujoco/*_v5.py``); MuJoCo's ``mujoco.batch`` documentation.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import mujoco
import numpy as np
from mujoco import batch as mj_batch

from metarl_envs.base import MetaEnv, MetaVectorEnv, check_action
from metarl_envs.tasks import Task

ASSETS_DIR = Path(gym.__file__).resolve().parent / "envs" / "mujoco" / "assets"
_UNSTABLE_WARNINGS = np.array([
    int(mujoco.mjtWarning.mjWARN_BADQPOS),
    int(mujoco.mjtWarning.mjWARN_BADQVEL),
    int(mujoco.mjtWarning.mjWARN_BADQACC),
])
_UNSTABLE_WARNING_LIST = tuple(int(i) for i in _UNSTABLE_WARNINGS)
_WARNED, _NOT_WARNED = np.array([True]), np.array([False])
_WARNED.flags.writeable = _NOT_WARNED.flags.writeable = False
_OBS_LIMIT = 1e6  # magnitude an observation is clipped to on an unstable step
_PROBE_SITE = "metarl_contact_probe"


# ----------------------------------------------------------------------------
# Robots: the physics and observation conventions of gymnasium's v5 envs.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HealthSpec:
    """When a robot is healthy (gymnasium v5 ``is_healthy``); unhealthy terminates."""

    z_index: int  # qpos index of the torso height
    z_range: tuple[float, float]
    closed: bool = False  # Ant-v5 uses closed intervals, Hopper/Walker2d-v5 open ones
    angle_index: int | None = None  # qpos index of the torso pitch
    angle_range: tuple[float, float] = (-np.inf, np.inf)
    state_range: tuple[float, float] | None = None  # bound on (qpos[2:], qvel) (Hopper-v5)


@dataclasses.dataclass(frozen=True)
class Robot:
    """One of gymnasium's MuJoCo robots with its v5 conventions."""

    name: str
    xml_file: str  # in gymnasium/envs/mujoco/assets
    frame_skip: int
    render_fps: int  # 1 / (timestep * frame_skip); a test checks it against the model
    reset_noise_scale: float
    qvel_noise: str  # "normal" (scale * N(0, 1), HalfCheetah/Ant) or "uniform" (U(-scale, scale))
    skipped_qpos: int  # leading qpos entries left out of the observation (global x, or x and y)
    qvel_clip: float | None = None  # Hopper/Walker2d-v5 clip velocities in the observation
    contact_forces: bool = False  # Ant-v5: clip(cfrc_ext[1:], -1, 1) in the observation
    health: HealthSpec | None = None
    velocity_body: int | None = None  # Ant-v5 measures velocity on body 1's xpos; else qpos[0]
    camera_distance: float = 4.0
    camera_elevation: float = -20.0


HALF_CHEETAH = Robot("half_cheetah", "half_cheetah.xml", frame_skip=5, render_fps=20,
                     reset_noise_scale=0.1, qvel_noise="normal", skipped_qpos=1)
HOPPER = Robot("hopper", "hopper.xml", frame_skip=4, render_fps=125,
               reset_noise_scale=5e-3, qvel_noise="uniform", skipped_qpos=1, qvel_clip=10.0,
               health=HealthSpec(z_index=1, z_range=(0.7, np.inf), angle_index=2,
                                 angle_range=(-0.2, 0.2), state_range=(-100.0, 100.0)),
               camera_distance=3.0)
WALKER2D = Robot("walker2d", "walker2d_v5.xml", frame_skip=4, render_fps=125,
                 reset_noise_scale=5e-3, qvel_noise="uniform", skipped_qpos=1, qvel_clip=10.0,
                 health=HealthSpec(z_index=1, z_range=(0.8, 2.0), angle_index=2,
                                   angle_range=(-1.0, 1.0)))
ANT = Robot("ant", "ant.xml", frame_skip=5, render_fps=20, reset_noise_scale=0.1,
            qvel_noise="normal", skipped_qpos=2, contact_forces=True,
            health=HealthSpec(z_index=2, z_range=(0.2, 1.0), closed=True), velocity_body=1,
            camera_distance=5.0, camera_elevation=-30.0)


@cache
def _compiled(robot: Robot) -> mujoco.MjModel:
    spec = mujoco.MjSpec.from_file(str(ASSETS_DIR / robot.xml_file))
    if robot.contact_forces:
        # An accelerometer makes mj_step run mj_rnePostConstraint, so cfrc_ext
        # is computed in every substep (and copied out by the batch). It reads
        # the state only; the dynamics are unchanged.
        spec.body("torso").add_site(name=_PROBE_SITE)
        spec.add_sensor(name=_PROBE_SITE, type=mujoco.mjtSensor.mjSENS_ACCELEROMETER,
                        objtype=mujoco.mjtObj.mjOBJ_SITE, objname=_PROBE_SITE)
    with warnings.catch_warnings():
        # gymnasium's half_cheetah.xml uses the deprecated settotalmass; the
        # compiled model is what gymnasium itself gets, so the warning is noise.
        warnings.filterwarnings("ignore", message=".*settotalmass.*", category=UserWarning)
        return spec.compile()


def build_model(robot: Robot) -> mujoco.MjModel:
    """A fresh ``MjModel`` of ``robot`` (a copy: callers may change its fields)."""
    return _compiled(robot).__copy__()


def observation_size(robot: Robot, model: mujoco.MjModel) -> int:
    size = model.nq - robot.skipped_qpos + model.nv
    return size + ((model.nbody - 1) * 6 if robot.contact_forces else 0)


def actuator_joint_names(model: mujoco.MjModel) -> tuple[str, ...]:
    """The joint each actuator drives, in actuator order (the Ant's actuators are unnamed)."""
    return tuple(model.joint(int(model.actuator_trnid[i, 0])).name for i in range(model.nu))


# ----------------------------------------------------------------------------
# Batched functions used by BOTH envs. Arrays carry a leading batch dimension B.
# ----------------------------------------------------------------------------


def reset_state(robot: Robot, init_qpos: np.ndarray, init_qvel: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Initial (qpos, qvel) of one sub-env, drawn from ``rng`` in gymnasium v5's order."""
    scale = robot.reset_noise_scale
    # qpos: init + U(-scale, scale)
    qpos = init_qpos + rng.uniform(low=-scale, high=scale, size=init_qpos.size)
    if robot.qvel_noise == "normal":
        # qvel: init + scale * N(0, 1)  (HalfCheetah-v5, Ant-v5)
        qvel = init_qvel + scale * rng.standard_normal(init_qvel.size)
    else:
        # qvel: init + U(-scale, scale)  (Hopper-v5, Walker2d-v5)
        qvel = init_qvel + rng.uniform(low=-scale, high=scale, size=init_qvel.size)
    return qpos, qvel


def observe(robot: Robot, qpos: np.ndarray, qvel: np.ndarray,
            cfrc_ext: np.ndarray | None) -> np.ndarray:
    """Observations ``[B, obs_dim]`` from ``qpos [B, nq]``, ``qvel [B, nv]``, ``cfrc_ext [B, nbody, 6]``."""
    velocity = qvel if robot.qvel_clip is None else np.clip(qvel, -robot.qvel_clip, robot.qvel_clip)
    parts = [qpos[:, robot.skipped_qpos:], velocity]
    if robot.contact_forces:
        parts.append(np.clip(cfrc_ext[:, 1:], -1.0, 1.0).reshape(len(qpos), -1))
    return np.concatenate(parts, axis=1)


@cache
def _all_true(size: int) -> np.ndarray:
    array = np.ones(size, dtype=bool)
    array.flags.writeable = False
    return array


@cache
def _all_false(size: int) -> np.ndarray:
    array = np.zeros(size, dtype=bool)
    array.flags.writeable = False
    return array


def healthy(robot: Robot, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """Health ``[B]`` as gymnasium v5 defines it (always True for robots without a health spec)."""
    spec = robot.health
    if spec is None:
        return _all_true(len(qpos))
    z = qpos[:, spec.z_index]
    low, high = spec.z_range
    if spec.closed:
        ok = np.isfinite(qpos).all(axis=1) & np.isfinite(qvel).all(axis=1) & (low <= z) & (z <= high)
    else:
        ok = (low < z) & (z < high)
    if spec.angle_index is not None:
        angle = qpos[:, spec.angle_index]
        ok &= (spec.angle_range[0] < angle) & (angle < spec.angle_range[1])
    if spec.state_range is not None:
        state = np.concatenate([qpos[:, 2:], qvel], axis=1)
        ok &= ((spec.state_range[0] < state) & (state < spec.state_range[1])).all(axis=1)
    return ok


def tracked_position(robot: Robot, qpos: np.ndarray, xpos: np.ndarray | None) -> np.ndarray:
    """Position whose change over a step is the robot's velocity: ``[B, 2]`` (x, y) for
    robots measured on a body (Ant), ``[B, 1]`` (x) for planar robots."""
    if robot.velocity_body is not None:
        return xpos[:, robot.velocity_body, :2].copy()
    return qpos[:, :1].copy()


def ctrl_reward(action: np.ndarray, weight: float) -> np.ndarray:
    """The control term ``-weight * ||a||^2`` per sub-env, ``[B]``, on the commanded action ``[B, nu]``."""
    # one gufunc call (row-wise dot product): the cheapest form for the single env's B = 1
    return np.vecdot(action, action) * -weight


def contact_reward(cfrc_ext: np.ndarray, weight: float = 5e-4) -> np.ndarray:
    """Ant-v5's contact term ``-weight * ||clip(cfrc_ext, -1, 1)||^2`` per sub-env, ``[B]``."""
    squares = np.square(np.clip(cfrc_ext, -1.0, 1.0)).reshape(len(cfrc_ext), -1)
    return np.add.reduce(squares, axis=1) * -weight


class StepBatch(NamedTuple):
    """What a family's reward function sees after a step (arrays with leading batch dim B).

    A NamedTuple rather than a dataclass: it is built on every step of the single env.
    """

    qpos: np.ndarray  # [B, nq]
    qvel: np.ndarray  # [B, nv]
    velocity: np.ndarray  # [B, 2] (Ant: x, y) or [B, 1] (planar robots: x) velocity, m/s
    position: np.ndarray  # [B, 2] or [B, 1] tracked position after the step, m
    action: np.ndarray  # [B, nu] the commanded action
    cfrc_ext: np.ndarray | None  # [B, nbody, 6] (robots with contact forces)
    healthy: np.ndarray  # [B] bool


RewardFn = Callable[[StepBatch, dict[str, np.ndarray]], tuple[np.ndarray, dict[str, np.ndarray]]]


@dataclasses.dataclass(frozen=True)
class FamilyDef:
    """Everything that makes one MuJoCo family; the rest is this module's machinery.

    Attributes:
        robot: the robot and its v5 conventions.
        task_class: the family's task dataclass.
        default_task: the task used until one is set.
        task_arrays: tasks -> per-sub-env parameter arrays (``{"goal_velocity_mps": [B]}``).
        reward: ``(step, params) -> (reward [B], reward terms {info key: [B]})``.
        terminate_when_unhealthy: whether an unhealthy robot ends the episode.
        ctrl_mask: ``(task, actuator joint names) -> [nu]`` multipliers applied to the
            action before it reaches the actuators (crippled robots), or None.
        model_multipliers: ``task -> {model field: multipliers of its shape}`` applied to
            the nominal values at reset (randomised dynamics), or None.
    """

    robot: Robot
    task_class: type[Task]
    default_task: Task
    task_arrays: Callable[[Sequence[Task]], dict[str, np.ndarray]]
    reward: RewardFn
    terminate_when_unhealthy: bool = False
    ctrl_mask: Callable[[Task, tuple[str, ...]], np.ndarray] | None = None
    model_multipliers: Callable[[Task], dict[str, np.ndarray]] | None = None


def finish_step(
    family: FamilyDef,
    params: dict[str, np.ndarray],
    action: np.ndarray,
    qpos: np.ndarray,
    qvel: np.ndarray,
    cfrc_ext: np.ndarray | None,
    position_before: np.ndarray,
    position_after: np.ndarray,
    dt: float,
    warned: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Observation, reward, termination and instability of a batch of stepped sub-envs.

    Args:
        params: per-sub-env task arrays (``family.task_arrays``), each ``[B, ...]``.
        action: ``[B, nu]`` commanded actions.
        qpos, qvel, cfrc_ext: the state after the step (``[B, nq]``, ``[B, nv]``, ``[B, nbody, 6]``).
        position_before, position_after: tracked positions (:func:`tracked_position`).
        warned: ``[B]`` whether MuJoCo raised an instability warning or error in the step.

    Returns:
        ``(obs [B, obs_dim], reward [B], terminated [B], sim_unstable [B], info terms {key: [B]})``.
    """
    # Kept lean on purpose: the single env runs this with B = 1 on every step.
    robot = family.robot
    velocity = (position_after - position_before) / dt
    obs = observe(robot, qpos, qvel, cfrc_ext)
    is_healthy = healthy(robot, qpos, qvel)
    reward, terms = family.reward(
        StepBatch(qpos, qvel, velocity, position_after, action, cfrc_ext, is_healthy), params
    )
    terms["x_velocity"] = velocity[:, 0]
    if velocity.shape[1] == 2:
        terms["y_velocity"] = velocity[:, 1]
    # Two dot products tell whether anything is non-finite (absurd magnitudes whose
    # squares overflow are flagged too); only then is the per-sub-env test made.
    flat = obs.ravel()
    if math.isfinite(flat @ flat + reward @ reward) and not warned.any():
        unstable = warned  # all False
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            unstable = warned | ~np.isfinite(np.square(obs).sum(axis=1) + np.square(reward))
    if family.terminate_when_unhealthy:
        terminated = ~(is_healthy | unstable)
    else:
        terminated = _all_false(len(qpos))
    if unstable is not warned:
        obs = np.where(unstable[:, None], np.clip(np.nan_to_num(obs, nan=0.0), -_OBS_LIMIT, _OBS_LIMIT), obs)
        reward = np.where(unstable, 0.0, reward)
        terms = {key: np.where(unstable, 0.0, np.nan_to_num(value)) for key, value in terms.items()}
    return obs, reward, terminated, unstable, terms


def _warning_counts(warnings: np.ndarray) -> np.ndarray:
    """Instability warning counts ``[B]`` from MuJoCo warning stats ``[B, mjNWARNING, 2]``."""
    return warnings[:, _UNSTABLE_WARNINGS, 1].sum(axis=1)


def _warning_count(warning_numbers: np.ndarray) -> int:
    """Instability warning count of one MjData from ``data.warning.number``."""
    bad_qpos, bad_qvel, bad_qacc = _UNSTABLE_WARNING_LIST
    return int(warning_numbers[bad_qpos]) + int(warning_numbers[bad_qvel]) + int(warning_numbers[bad_qacc])


class _Dynamics:
    """Nominal copies of the model fields a family randomises, and their application."""

    def __init__(self, family: FamilyDef, model: mujoco.MjModel) -> None:
        self.family = family
        self.joint_names = actuator_joint_names(model)
        probe = family.model_multipliers(family.default_task) if family.model_multipliers else {}
        # model.<field> is a live view: keep copies of the nominal values.
        self.nominal = {name: getattr(model, name).copy() for name in probe}

    def ctrl_mask(self, task: Task, nu: int) -> np.ndarray:
        if self.family.ctrl_mask is None:
            return np.ones(nu)
        return self.family.ctrl_mask(task, self.joint_names)

    def apply(self, task: Task, current: Callable[[str], np.ndarray]) -> bool:
        """Write ``task``'s field values into the arrays ``current(name)``; True if any changed.

        Unchanged values are not rewritten, so the caller can skip recomputing the
        constants derived from them (``mj_setConst``) when a task is set again.
        """
        changed = False
        for name, values in self.fields(task).items():
            target = current(name)
            if not np.array_equal(target, values):
                target[...] = values
                changed = True
        return changed

    def fields(self, task: Task) -> dict[str, np.ndarray]:
        """Model field values for ``task``: nominal * multipliers (idempotent, never compounds)."""
        if not self.nominal:
            return {}
        multipliers = self.family.model_multipliers(task)
        return {name: self.nominal[name] * multipliers[name] for name in self.nominal}


# ----------------------------------------------------------------------------
# The single env.
# ----------------------------------------------------------------------------


class LocomotionEnv(MetaEnv):
    """A MuJoCo family's single env; a family subclass sets ``family_def``.

    ``render_mode="rgb_array"`` renders through MuJoCo's renderer with a camera
    tracking the torso.
    """

    family_def: ClassVar[FamilyDef]
    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "family_def" in cls.__dict__:
            cls.task_class = cls.family_def.task_class
            cls.metadata = {"render_modes": ["rgb_array"], "render_fps": cls.family_def.robot.render_fps}

    def __init__(self, task: Task | None = None, render_mode: str | None = None,
                 width: int = 480, height: int = 480) -> None:
        super().__init__(task)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        family = self.family_def
        self.render_mode = render_mode
        self._size = (int(height), int(width))
        self.model = build_model(family.robot)
        self.data = mujoco.MjData(self.model)
        self._dynamics = _Dynamics(family, self.model)
        self.dt = float(self.model.opt.timestep) * family.robot.frame_skip
        self.init_qpos = self.model.qpos0.copy()
        self.init_qvel = np.zeros(self.model.nv)
        ctrl_range = self.model.actuator_ctrlrange.astype(np.float32)
        self.action_space = gym.spaces.Box(ctrl_range[:, 0], ctrl_range[:, 1], dtype=np.float32)
        self._ctrl_low, self._ctrl_high = self.action_space.low.astype(np.float64), self.action_space.high.astype(np.float64)
        size = observation_size(family.robot, self.model)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np.float64)
        self._mask = np.ones(self.model.nu)
        self._params: dict[str, np.ndarray] = {}
        # batch-of-one views of the MjData arrays, for the shared batched functions
        data = self.data
        self._qpos, self._qvel, self._ctrl = data.qpos[None], data.qvel[None], data.ctrl[None]
        self._xpos = data.xpos[None]
        self._cfrc = data.cfrc_ext[None] if family.robot.contact_forces else None
        self._warnings = data.warning.number
        self._warning_total = 0
        self._position = tracked_position(family.robot, self._qpos, self._xpos)
        self._renderer: mujoco.Renderer | None = None

    @classmethod
    def default_task(cls) -> Task:
        return cls.family_def.default_task


    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        self._begin_reset(seed, options)
        family, model, data = self.family_def, self.model, self.data
        if self._dynamics.apply(self.task, lambda name: getattr(model, name)):
            mujoco.mj_setConst(model, data)  # constants derived from masses follow them
        self._mask = self._dynamics.ctrl_mask(self.task, model.nu)
        self._params = family.task_arrays([self.task])
        qpos, qvel = reset_state(family.robot, self.init_qpos, self.init_qvel, self.np_random)
        mujoco.mj_resetData(model, data)  # also zeroes the warning counters
        self._warning_total = 0
        data.qpos[:], data.qvel[:] = qpos, qvel
        mujoco.mj_forward(model, data)
        self._position = tracked_position(family.robot, self._qpos, self._xpos)
        return observe(family.robot, self._qpos, self._qvel, self._cfrc)[0], {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.clip(check_action(action, self.action_space.shape), self._ctrl_low, self._ctrl_high)
        family = self.family_def
        np.multiply(action, self._mask, out=self._ctrl[0])
        mujoco.mj_step(self.model, self.data, nstep=family.robot.frame_skip)
        count = _warning_count(self._warnings)
        warned = _WARNED if count > self._warning_total else _NOT_WARNED
        self._warning_total = count
        position = tracked_position(family.robot, self._qpos, self._xpos)
        obs, reward, terminated, unstable, terms = finish_step(
            family, self._params, action[None], self._qpos, self._qvel, self._cfrc,
            self._position, position, self.dt, warned,
        )
        self._position = position
        info = {key: float(value[0]) for key, value in terms.items()}
        info["sim_unstable"] = bool(unstable[0])
        return obs[0], float(reward[0]), bool(terminated[0]), bool(unstable[0]), info

    def render(self) -> np.ndarray | None:
        """An RGB frame ``[height, width, 3]`` from a camera tracking the torso."""
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, height=self._size[0], width=self._size[1])
            camera = mujoco.MjvCamera()
            camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
            camera.trackbodyid = 1
            camera.distance = self.family_def.robot.camera_distance
            camera.elevation = self.family_def.robot.camera_elevation
            camera.azimuth = 90.0
            self._camera = camera
        self._renderer.update_scene(self.data, camera=self._camera)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        super().close()


# ----------------------------------------------------------------------------
# The batched vector env.
# ----------------------------------------------------------------------------


class LocomotionVectorEnv(MetaVectorEnv):
    """A MuJoCo family's batched vector env; a family subclass sets ``family_def``.

    All stepping sub-envs advance in one ``Batch.step`` call per env step.

    Args:
        num_envs: number of sub-envs (each with its own task).
        max_episode_steps: time limit (``gym.make_vec`` passes the registered horizon).
        num_threads: threads of the batch's pool, including the caller's; 0 = all CPUs.
    """

    family_def: ClassVar[FamilyDef]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "family_def" in cls.__dict__:
            cls.task_class = cls.family_def.task_class
            family = cls.family_def
            cls.default_task = classmethod(lambda _cls: family.default_task)

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None,
                 num_threads: int = 0) -> None:
        super().__init__(num_envs, max_episode_steps)
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 0:
            raise ValueError(f"num_threads must be an int >= 0 (0 = all CPUs), got {num_threads!r}")
        family = self.family_def
        robot = family.robot
        self.model = build_model(robot)
        self._dynamics = _Dynamics(family, self.model)
        threads = min(num_threads or (os.cpu_count() or 1), num_envs)
        self._batch = mj_batch.Batch(self.model, num_envs, nthread=threads)
        # live views of the state rows, and outputs refreshed after every call
        self._qpos = self._batch.bind("qpos")
        self._qvel = self._batch.bind("qvel")
        self._ctrl = self._batch.bind("ctrl")
        self._xpos = self._batch.bind("xpos") if robot.velocity_body is not None else None
        self._cfrc = self._batch.bind("cfrc_ext") if robot.contact_forces else None
        self._fields = {name: self._batch.expand(name) for name in self._dynamics.nominal}
        self.dt = float(self.model.opt.timestep) * robot.frame_skip
        self.init_qpos = self.model.qpos0.copy()
        self.init_qvel = np.zeros(self.model.nv)
        ctrl_range = self.model.actuator_ctrlrange.astype(np.float32)
        self.single_action_space = gym.spaces.Box(ctrl_range[:, 0], ctrl_range[:, 1], dtype=np.float32)
        self._ctrl_low = self.single_action_space.low.astype(np.float64)
        self._ctrl_high = self.single_action_space.high.astype(np.float64)
        size = observation_size(robot, self.model)
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np.float64)
        self._finish_init()
        self._mask = np.ones((num_envs, self.model.nu))
        self._params = family.task_arrays(self._next_tasks)
        self._position = np.zeros((num_envs, 2 if robot.velocity_body is not None else 1))

    def _reset_envs(self, index: np.ndarray) -> np.ndarray:
        family, robot = self.family_def, self.family_def.robot
        tasks = [self.tasks[i] for i in index]
        changed = []
        for i, task in zip(index, tasks, strict=True):
            self._mask[i] = self._dynamics.ctrl_mask(task, self.model.nu)
            if self._dynamics.apply(task, lambda name, i=i: self._fields[name][i]):
                changed.append(i)
        if changed:
            self._batch.set_const(np.array(changed))
        for key, values in family.task_arrays(tasks).items():
            self._params[key][index] = values
        states = [reset_state(robot, self.init_qpos, self.init_qvel, self._rngs[i]) for i in index]
        self._batch.reset(index, stage=mujoco.mjtStage.mjSTAGE_NONE.value)
        self._qpos[index] = [qpos for qpos, _ in states]
        self._qvel[index] = [qvel for _, qvel in states]
        self._batch.forward(index)
        self._position[index] = tracked_position(robot, self._qpos[index], self._xpos[index]
                                                 if self._xpos is not None else None)
        cfrc = self._cfrc[index] if self._cfrc is not None else None
        return observe(robot, self._qpos[index], self._qvel[index], cfrc)

    def _step_envs(
        self, actions: np.ndarray, index: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        robot = self.family_def.robot
        every = index.size == self.num_envs
        ids = None if every else index
        before = _warning_counts(self._batch.warning[index])
        actions = np.clip(actions, self._ctrl_low, self._ctrl_high)  # what the actuators apply, and are charged
        self._ctrl[index] = actions * self._mask[index]
        failed = np.zeros(index.size, dtype=bool)
        try:
            self._batch.step(ids, nstep=robot.frame_skip)
        except mj_batch.SimulationError as error:  # those sims kept their state; mark them
            failed = np.isin(index, error.ids)
        warned = (_warning_counts(self._batch.warning[index]) > before) | failed
        qpos, qvel = self._qpos[index], self._qvel[index]
        position = tracked_position(robot, qpos, self._xpos[index] if self._xpos is not None else None)
        cfrc = self._cfrc[index] if self._cfrc is not None else None
        params = {key: value[index] for key, value in self._params.items()}
        obs, reward, terminated, unstable, terms = finish_step(
            self.family_def, params, actions, qpos, qvel, cfrc, self._position[index], position,
            self.dt, warned,
        )
        self._position[index] = position
        return obs, reward, terminated, unstable, terms
