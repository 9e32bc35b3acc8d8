"""Env speed: our envs against gymnasium's and against MuJoCo's physics limit (DESIGN.md §8).

For each robot (HalfCheetah, Ant, Hopper) it measures, side by side in one run,
env steps per second (random actions drawn beforehand, resets included) of

1. our single env (``gym.make``, so with TimeLimit) vs gymnasium's v5 env of the
   same robot (``gym.make``): goal >= 0.95x;
2. our batched vector env with ``num_envs`` (64) sub-envs vs gymnasium's
   ``SyncVectorEnv`` of 8 v5 envs: goal >= 2.5x;
3. our batched vector env vs open-loop ``mujoco.rollout`` of as many rollouts on
   the same model (one call, persistent thread pool, same thread count): the
   physics limit, goal >= 0.6x.

Every measurement is repeated ``repeats`` times in interleaved order and the
best rate is kept, so a burst of load from other processes hurts both sides
of a ratio alike. The families measured: HalfCheetahVel, AntDir and
HopperRandParams (nominal tasks).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from functools import partial

import gymnasium as gym
import mujoco
import numpy as np
import tyro
from mujoco import rollout
from tqdm.auto import tqdm

import envs
from envs.mujoco_core import ANT, HALF_CHEETAH, HOPPER, Robot, build_model

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

    robots: tuple[str, ...] = ("half_cheetah", "ant", "hopper")
    """Robots to measure (half_cheetah, ant, hopper)."""
    single_steps: int = 3000
    """Env steps per single-env measurement."""
    vector_steps: int = 200
    """Steps of the whole batch per vector-env measurement."""
    num_envs: int = 64
    """Sub-envs of our vector env and rollouts of mujoco.rollout."""
    gym_vector_envs: int = 8
    """Sub-envs of gymnasium's SyncVectorEnv."""
    repeats: int = 3
    """Repeats of every measurement (interleaved); the best rate is reported."""
    seed: int = 0
    """Seed of the random actions and of the resets."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.robots) - set(ROBOTS))
        if unknown or not self.robots:
            raise ValueError(f"robots must be some of {sorted(ROBOTS)}, got {list(self.robots)}")
        for name in ("single_steps", "vector_steps", "num_envs", "gym_vector_envs", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def single_env_rate(env: gym.Env, steps: int, seed: int) -> float:
    """Env steps/s of a single env under random actions, resetting when an episode ends."""
    actions = np.random.default_rng(seed).uniform(
        env.action_space.low, env.action_space.high, size=(steps, *env.action_space.shape)
    ).astype(env.action_space.dtype)
    env.reset(seed=seed)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def vector_env_rate(env: gym.vector.VectorEnv, steps: int, seed: int) -> float:
    """Env steps/s (sub-env steps) of a vector env under random actions (it autoresets)."""
    space = env.single_action_space
    actions = np.random.default_rng(seed).uniform(
        space.low, space.high, size=(steps, env.num_envs, *space.shape)
    ).astype(space.dtype)
    env.reset(seed=seed)
    start = time.perf_counter()
    for action in actions:
        env.step(action)
    return steps * env.num_envs / (time.perf_counter() - start)


def rollout_rate(robot: Robot, num_rollouts: int, steps: int, seed: int, threads: int) -> float:
    """Env steps/s of open-loop ``mujoco.rollout``: ``num_rollouts`` x ``steps * frame_skip`` substeps."""
    model = build_model(robot)
    datas = [mujoco.MjData(model) for _ in range(max(threads, 1))]
    nstate = mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_FULLPHYSICS)
    state0 = np.zeros(nstate)
    mujoco.mj_getState(model, datas[0], state0, mujoco.mjtState.mjSTATE_FULLPHYSICS)
    rng = np.random.default_rng(seed)
    low, high = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
    nstep = steps * robot.frame_skip
    control = np.repeat(rng.uniform(low, high, size=(num_rollouts, steps, model.nu)), robot.frame_skip, axis=1)
    initial = np.tile(state0, (num_rollouts, 1))
    out_state = np.empty((num_rollouts, nstep, nstate))
    out_sensor = np.empty((num_rollouts, nstep, model.nsensordata))
    start = time.perf_counter()
    rollout.rollout(model, datas if threads > 1 else datas[0], initial, control, nstep=nstep,
                    state=out_state, sensordata=out_sensor, persistent_pool=True)
    return num_rollouts * steps / (time.perf_counter() - start)


@dataclasses.dataclass
class RobotResult:
    """Best rates (env steps/s) of one robot."""

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
    """Run every measurement ``config.repeats`` times (interleaved) and keep the best."""
    threads = os.cpu_count() or 1
    jobs: list[tuple[str, str, Callable[[], float]]] = []
    for name in config.robots:
        family, gym_id, robot = ROBOTS[name]
        ours_single = gym.make(envs.env_id(family))
        gym_single = gym.make(gym_id)
        ours_vector = gym.make_vec(envs.env_id(family), num_envs=config.num_envs,
                                   vectorization_mode="vector_entry_point")
        gym_sync = gym.make_vec(gym_id, num_envs=config.gym_vector_envs, vectorization_mode="sync")
        single, vector, seed = config.single_steps, config.vector_steps, config.seed
        # the gymnasium vector env gets as many sub-env steps as ours
        gym_vector_steps = max(1, vector * config.num_envs // config.gym_vector_envs)
        jobs += [
            (name, "ours_single", partial(single_env_rate, ours_single, single, seed)),
            (name, "gym_single", partial(single_env_rate, gym_single, single, seed)),
            (name, "ours_vector", partial(vector_env_rate, ours_vector, vector, seed)),
            (name, "gym_sync", partial(vector_env_rate, gym_sync, gym_vector_steps, seed)),
            (name, "rollout", partial(rollout_rate, robot, config.num_envs, vector, seed, threads)),
        ]
    best: dict[tuple[str, str], float] = {}
    with tqdm(total=len(jobs) * config.repeats, desc="bench envs", unit="run") as bar:
        for _ in range(config.repeats):
            for robot_name, key, job in jobs:
                best[robot_name, key] = max(best.get((robot_name, key), 0.0), job())
                bar.update()
    rollout.shutdown_persistent_pool()
    return [RobotResult(name, ROBOTS[name][0], ROBOTS[name][1],
                        {key: rate for (robot, key), rate in best.items() if robot == name})
            for name in config.robots]


def format_results(results: list[RobotResult], config: EnvBenchConfig) -> str:
    """A markdown table of rates and ratios with their goals."""
    n, g = config.num_envs, config.gym_vector_envs
    lines = [
        f"env steps/s, best of {config.repeats}; {os.cpu_count()} CPUs; mujoco {mujoco.__version__}, "
        f"gymnasium {gym.__version__}",
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
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Entry point of ``metarl bench envs`` and ``scripts/bench_envs.py``."""
    config = tyro.cli(EnvBenchConfig, args=argv, prog="metarl bench envs")
    results = measure(config)
    print(format_results(results, config))
    return 0
