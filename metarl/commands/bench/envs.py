"""Env speed: our envs against gymnasium's and against MuJoCo's physics limit (docs/design.md, "Benchmarks").

For each robot (HalfCheetah, Ant, Hopper) it measures, side by side in one run,
env steps per second (random actions drawn beforehand, resets included) of

1. our single env (``gym.make``, so with TimeLimit) vs gymnasium's v5 env of the
   same robot (``gym.make``): goal >= 0.95x;
2. our batched vector env with ``num_envs`` (64) sub-envs vs gymnasium's
   ``SyncVectorEnv`` of 8 v5 envs: goal >= 2.5x;
3. our batched vector env vs open-loop ``mujoco.rollout`` of as many rollouts on
   the same model (one call, persistent thread pool, same thread count): the
   physics limit, goal >= 0.6x.

The five measurements of a robot run interleaved, in chunks of about
``chunk_steps`` env steps, for ``rounds`` rounds (alternating order), and each
rate is total steps over total time: a burst of load from other processes
falls on both sides of a ratio alike. Random actions are drawn beforehand. The
families measured: HalfCheetahVel, AntDir and HopperRandParams (nominal tasks).

The report ends with the load average: interleaving shares a burst of load
between both sides of a ratio, but a machine busy with other work for the
whole run can still push a ratio below its goal.

gymnasium's v5 HalfCheetah loads an XML with MuJoCo's deprecated
``settotalmass``; MuJoCo prints a warning for each such env and appends it to
``MUJOCO_LOG.TXT`` in the working directory. The reference envs are built under
:func:`mujoco_warnings_as_python_warnings`, which drops that one message
(our envs compile the same XML and drop it too, see ``envs/mujoco_core.py``)
and turns any other into a Python warning instead of a log file.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import os
import time
import warnings
from collections.abc import Iterator
from typing import Annotated

import gymnasium as gym
import mujoco
import numpy as np
import tyro
from mujoco import rollout
from tqdm.auto import tqdm

import metarl_envs as envs
from metarl.core.flags import parse
from metarl.core.validation import check_int
from metarl_envs.mujoco_core import ANT, HALF_CHEETAH, HOPPER, Robot, build_model

# robot name -> (our family, gymnasium id, robot)
ROBOTS: dict[str, tuple[str, str, Robot]] = {
    "half_cheetah": ("HalfCheetahVel", "HalfCheetah-v5", HALF_CHEETAH),
    "ant": ("AntDir", "Ant-v5", ANT),
    "hopper": ("HopperRandParams", "Hopper-v5", HOPPER),
}
GOALS = {"single": 0.95, "vector": 2.5, "physics": 0.6}


@dataclasses.dataclass(frozen=True)
class EnvBenchConfig:
    """Measure env steps/s of our envs against gymnasium and mujoco.rollout."""

    robots: Annotated[tuple[str, ...], tyro.conf.arg(metavar="ROBOT [ROBOT ...]")] = ("half_cheetah", "ant", "hopper")
    """Robots to measure (half_cheetah, ant, hopper)."""
    chunk_steps: int = 640
    """Env steps per chunk of every measurement (vector envs: divided among the sub-envs)."""
    rounds: int = 12
    """Rounds of interleaved chunks per robot."""
    num_envs: int = 64
    """Sub-envs of our vector env and rollouts of mujoco.rollout."""
    gym_vector_envs: int = 8
    """Sub-envs of gymnasium's SyncVectorEnv."""
    seed: int = 0
    """Seed of the random actions and of the resets."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.robots) - set(ROBOTS))
        if unknown or not self.robots:
            raise ValueError(f"robots must be some of {sorted(ROBOTS)}, got {list(self.robots)}")
        for name in ("chunk_steps", "rounds", "num_envs", "gym_vector_envs"):
            check_int(name, getattr(self, name), 1)


DROPPED_MUJOCO_WARNINGS = ("settotalmass",)
"""Substrings of MuJoCo warnings that the reference envs' models always raise and that are dropped."""


@contextlib.contextmanager
def mujoco_warnings_as_python_warnings() -> Iterator[None]:
    """Within the block, MuJoCo's C-level warnings become Python ``RuntimeWarning``s.

    Those naming :data:`DROPPED_MUJOCO_WARNINGS` are dropped. MuJoCo then neither
    prints them nor writes ``MUJOCO_LOG.TXT``; the previous handler comes back after.
    """

    def handler(message: str) -> None:
        if not any(text in message for text in DROPPED_MUJOCO_WARNINGS):
            warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(handler)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


class Stepper(abc.ABC):
    """Something that advances by a number of steps and reports the env steps it took."""

    @abc.abstractmethod
    def run(self, steps: int) -> int:
        """Advance by about ``steps`` env steps; return the env steps actually taken."""


class SingleEnvStepper(Stepper):
    """A single env under random actions drawn beforehand, resetting when an episode ends."""

    def __init__(self, env: gym.Env, seed: int, pool: int = 4096) -> None:
        space = env.action_space
        rng = np.random.default_rng(seed)
        self.env = env
        self.actions = rng.uniform(space.low, space.high, size=(pool, *space.shape)).astype(space.dtype)
        self.cursor = 0
        env.reset(seed=seed)

    def run(self, steps: int) -> int:
        env, actions, pool = self.env, self.actions, len(self.actions)
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(actions[self.cursor % pool])
            self.cursor += 1
            if terminated or truncated:
                env.reset()
        return steps


class VectorEnvStepper(Stepper):
    """A vector env (it autoresets) under random actions; counts sub-env steps."""

    def __init__(self, env: gym.vector.VectorEnv, seed: int, pool: int = 256) -> None:
        space = env.single_action_space
        rng = np.random.default_rng(seed)
        self.env = env
        self.actions = rng.uniform(space.low, space.high,
                                   size=(pool, env.num_envs, *space.shape)).astype(space.dtype)
        self.cursor = 0
        env.reset(seed=seed)

    def run(self, steps: int) -> int:
        for _ in range(steps):
            self.env.step(self.actions[self.cursor % len(self.actions)])
            self.cursor += 1
        return steps * self.env.num_envs


class RolloutStepper(Stepper):
    """Open-loop ``mujoco.rollout``: one call of ``steps * frame_skip`` substeps per rollout.

    Each call continues from the states where the previous one ended.
    """

    def __init__(self, robot: Robot, num_rollouts: int, seed: int, threads: int) -> None:
        self.robot = robot
        self.model = build_model(robot)
        self.datas = [mujoco.MjData(self.model) for _ in range(max(threads, 1))]
        nstate = mujoco.mj_stateSize(self.model, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        state = np.zeros(nstate)
        mujoco.mj_getState(self.model, self.datas[0], state, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        self.initial = np.tile(state, (num_rollouts, 1))
        self.rng = np.random.default_rng(seed)
        self.num_rollouts = num_rollouts

    def run(self, steps: int) -> int:
        model, robot = self.model, self.robot
        ranges = model.actuator_ctrlrange
        control = self.rng.uniform(ranges[:, 0], ranges[:, 1], size=(self.num_rollouts, steps, model.nu))
        control = np.repeat(control, robot.frame_skip, axis=1)  # held for frame_skip substeps
        data = self.datas if len(self.datas) > 1 else self.datas[0]
        states, _ = rollout.rollout(model, data, self.initial, control, nstep=steps * robot.frame_skip,
                                    persistent_pool=True)
        self.initial = np.ascontiguousarray(states[:, -1])
        return self.num_rollouts * steps


def interleaved_rates(steppers: dict[str, tuple[Stepper, int]], rounds: int,
                      bar: tqdm | None = None) -> dict[str, float]:
    """Env steps/s of each stepper, measured in alternating chunks.

    Each round runs every stepper for its chunk (``steppers[key] = (stepper, chunk)``),
    in an order that alternates from round to round, so that load from other
    processes falls on all of them alike; rates are total steps over total time.
    """
    steps = dict.fromkeys(steppers, 0)
    seconds = dict.fromkeys(steppers, 0.0)
    keys = list(steppers)
    for round_index in range(rounds):
        for key in keys if round_index % 2 == 0 else keys[::-1]:
            stepper, chunk = steppers[key]
            start = time.perf_counter()
            steps[key] += stepper.run(chunk)
            seconds[key] += time.perf_counter() - start
        if bar is not None:
            bar.update()
    return {key: steps[key] / seconds[key] for key in keys}


@dataclasses.dataclass
class RobotResult:
    """Rates (env steps/s) of one robot."""

    robot: str
    family: str
    gym_id: str
    rates: dict[str, float]

    def ratios(self) -> dict[str, float]:
        r = self.rates
        return {"single": r["ours_single"] / r["gym_single"],
                "vector": r["ours_vector"] / r["gym_sync"],
                "physics": r["ours_vector"] / r["rollout"]}


def measure(config: EnvBenchConfig) -> list[RobotResult]:
    """Measure every robot: five steppers interleaved chunk by chunk (see module docstring)."""
    threads = os.cpu_count() or 1
    results = []
    with tqdm(total=len(config.robots) * config.rounds, desc="bench envs", unit="round") as bar:
        for name in config.robots:
            family, gym_id, robot = ROBOTS[name]
            seed, n, g = config.seed, config.num_envs, config.gym_vector_envs
            ours_vector = gym.make_vec(envs.env_id(family), num_envs=n,
                                       vectorization_mode="vector_entry_point")
            with mujoco_warnings_as_python_warnings():
                gym_sync = gym.make_vec(gym_id, num_envs=g, vectorization_mode="sync")
                gym_single = gym.make(gym_id)
            chunk = config.chunk_steps
            steppers: dict[str, tuple[Stepper, int]] = {
                "ours_single": (SingleEnvStepper(gym.make(envs.env_id(family)), seed), chunk),
                "gym_single": (SingleEnvStepper(gym_single, seed), chunk),
                # the vector envs and rollout take about as many env steps per chunk
                "ours_vector": (VectorEnvStepper(ours_vector, seed), max(1, chunk // n)),
                "gym_sync": (VectorEnvStepper(gym_sync, seed), max(1, chunk // g)),
                "rollout": (RolloutStepper(robot, n, seed, threads), max(1, chunk // n)),
            }
            rates = interleaved_rates(steppers, config.rounds, bar)
            ours_vector.close()
            gym_sync.close()
            results.append(RobotResult(name, family, gym_id, rates))
    rollout.shutdown_persistent_pool()
    return results


def format_load(load_average: tuple[float, float, float], cpus: int) -> str:
    """One line: the load average and, above the CPU count, that the machine was loaded."""
    one, five, fifteen = load_average
    line = f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min) on {cpus} CPUs"
    if one > cpus:
        line += (": the machine was loaded (more runnable processes than CPUs), so the rates are below "
                 "its best and a ratio marked BELOW may come from the load; rerun on an idle machine")
    return line


def format_results(results: list[RobotResult], config: EnvBenchConfig,
                   load_average: tuple[float, float, float] | None = None) -> str:
    """A markdown table of rates and ratios with their goals, then the load average if given."""
    n, g = config.num_envs, config.gym_vector_envs
    lines = [
        f"env steps/s over {config.rounds} interleaved rounds of {config.chunk_steps} env steps; "
        f"{os.cpu_count()} CPUs; mujoco {mujoco.__version__}, gymnasium {gym.__version__}",
        "",
        f"| robot (our family) | ours single | gym v5 single | ratio (goal {GOALS['single']}) "
        f"| ours vector x{n} | gym Sync x{g} | ratio (goal {GOALS['vector']}) "
        f"| mujoco.rollout x{n} | ratio (goal {GOALS['physics']}) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        r, q = result.rates, result.ratios()
        mark = {key: f"{q[key]:.2f}x {'ok' if q[key] >= GOALS[key] else 'BELOW'}" for key in GOALS}
        lines.append(
            f"| {result.robot} ({result.family}) | {r['ours_single']:,.0f} | {r['gym_single']:,.0f} "
            f"| {mark['single']} | {r['ours_vector']:,.0f} | {r['gym_sync']:,.0f} | {mark['vector']} "
            f"| {r['rollout']:,.0f} | {mark['physics']} |"
        )
    if load_average is not None:
        lines += ["", format_load(load_average, os.cpu_count() or 1)]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Entry point of ``metarl bench envs`` and ``scripts/bench_envs.py``."""
    config = parse(EnvBenchConfig, argv, prog="metarl bench envs")
    results = measure(config)
    print(format_results(results, config, os.getloadavg()))
    return 0
