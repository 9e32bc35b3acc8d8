"""MAML speed (docs/design.md, "Benchmarks"): sampler overhead and seconds per meta-iteration.

Measured side by side in one process:

1. **Sampler**: env steps per second of :class:`~metarl.core.sampler.VectorEnvSampler`
   (one batched policy forward per step, per-task parameters) against the same
   vector env stepped alone with pre-drawn random actions, resets included, at
   the same batch (tasks x episodes x horizon). Goal: >= 0.8x. The two are
   measured in interleaved repeats and the best rate of each is kept, so a
   burst of load from other processes hurts both sides alike.
2. **Point2DNav meta-iteration** at 20 tasks x 20 episodes x horizon 100 (the
   MAML paper's config; learn2learn's MAML-TRPO example took about 53 s per
   meta-iteration at that config on the 2-core dev machine). Goal: < 1 s.
3. **HalfCheetahVel meta-iteration** at the paper's config (40 tasks x 10
   episodes x horizon 200) and the share of it spent outside the simulator
   (``1 - env time / iteration time``). Goal: <= 30%.

A meta-iteration is exactly the trainer's (:func:`metarl.algorithms.maml.training.meta_iteration`):
sample support, adapt, sample query, outer update. Seconds per iteration are
the median over ``iterations`` iterations after one warm-up iteration.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from typing import Annotated, Any

import gymnasium as gym
import numpy as np
import torch
import tyro

import metarl_envs as envs
from metarl.algorithms.maml.learner import OUTER_ALGORITHMS, MAMLLearner
from metarl.algorithms.maml.training import (
    SAMPLING_STREAM,
    TASK_STREAM,
    initial_policy,
    meta_iteration,
)
from metarl.algorithms.presets import maml_preset
from metarl.core.device import resolve_device
from metarl.core.flags import choice, device_choice, optional, parse
from metarl.core.policy import stack_params
from metarl.core.sampler import VectorEnvSampler
from metarl.storage.runs import IterationState

GOALS = {"sampler_ratio": 0.8, "point_seconds": 1.0, "outside_share": 0.30}
LEARN2LEARN_SECONDS = 53.0  # learn2learn MAML-TRPO, Particles2D, 20 x 20 x 100, on the dev machine


@dataclasses.dataclass(frozen=True)
class MAMLBenchConfig:
    """Measure the sampler's overhead and MAML's seconds per meta-iteration."""

    sampler_families: Annotated[tuple[str, ...], tyro.conf.arg(metavar="FAMILY [FAMILY ...]")] = ("Point2DNav", "HalfCheetahVel")
    """Families whose sampler overhead is measured (at their paper batch)."""
    iteration_families: Annotated[tuple[str, ...], tyro.conf.arg(metavar="FAMILY [FAMILY ...]")] = ("Point2DNav", "HalfCheetahVel")
    """Families whose meta-iteration time is measured at the paper config."""
    iterations: int = 2
    """Measured meta-iterations per family (after one warm-up)."""
    repeats: int = 3
    """Interleaved repeats of the sampler measurement (best kept)."""
    outer: Annotated[str, choice(OUTER_ALGORITHMS)] = "trpo"
    """Outer loop to time: trpo or promp."""
    cg_subsample: Annotated[float | None, optional("FLOAT", "the paper configs' exact curvature, 1.0")] = None
    """Override the preset's cg_subsample (fraction of tasks whose KL curvature TRPO's conjugate
    gradient uses, in (0, 1])."""
    device: Annotated[str, device_choice()] = "auto"
    """auto, cpu or cuda."""
    threads: int = 1
    """CPU threads for torch."""
    json: bool = False
    """Print the results as JSON."""


def _env_alone_rate(family: str, num_envs: int, horizon: int, seed: int) -> float:
    """Steps/s of the vector env alone: reset, then ``horizon`` steps of pre-drawn random actions."""
    vector_env = gym.make_vec(envs.env_id(family), num_envs=num_envs, vectorization_mode="vector_entry_point",
                              max_episode_steps=horizon)
    space = vector_env.single_action_space
    rng = np.random.default_rng(seed)
    actions = rng.uniform(space.low, space.high, size=(horizon, num_envs, *space.shape)).astype(np.float32)
    tasks = envs.distribution(family).sample(num_envs, "train", rng)
    vector_env.set_tasks(tasks)
    start = time.perf_counter()
    vector_env.reset(seed=seed)
    for t in range(horizon):
        vector_env.step(actions[t])
    seconds = time.perf_counter() - start
    vector_env.close()
    return num_envs * horizon / seconds


def sampler_overhead(family: str, repeats: int, device: torch.device) -> dict[str, Any]:
    """Env steps/s with the policy in the loop vs the env alone, at the family's paper batch."""
    config = maml_preset("paper", family)
    horizon = config.horizon or envs.family_spec(family).horizon
    sampler = VectorEnvSampler(family, config.meta_batch_size, device, horizon=horizon)
    policy = initial_policy(config, seed=0).to(device)  # the paper preset's architecture and init
    tasks = envs.distribution(family).sample(config.meta_batch_size, "train", np.random.default_rng(0))
    params = stack_params({k: v.detach() for k, v in policy.params().items()}, len(tasks))
    generator = torch.Generator().manual_seed(0)
    num_envs = config.meta_batch_size * config.episodes_per_task
    sampler.sample(policy, params, tasks, config.episodes_per_task, generator)  # warm-up
    best_env, best_sampler, env_share = 0.0, 0.0, 0.0
    for repeat in range(repeats):
        best_env = max(best_env, _env_alone_rate(family, num_envs, horizon, repeat))
        episodes = sampler.sample(policy, params, tasks, config.episodes_per_task, generator)
        rate = episodes.num_steps / sampler.last_seconds
        if rate > best_sampler:
            best_sampler, env_share = rate, sampler.last_env_seconds / sampler.last_seconds
    sampler.close()
    return {
        "family": family,
        "batch": f"{config.meta_batch_size} tasks x {config.episodes_per_task} episodes x {horizon} steps",
        "env_alone_steps_per_s": best_env,
        "sampler_steps_per_s": best_sampler,
        "ratio": best_sampler / best_env,
        "env_share_in_sampler": env_share,
    }


def iteration_time(
    family: str, iterations: int, outer: str, device: torch.device, cg_subsample: float | None = None
) -> dict[str, Any]:
    """Seconds per meta-iteration at the paper config, with its breakdown.

    Besides wall-clock seconds it records the CPU seconds of this process per
    iteration and the load average: on a shared machine the wall clock also
    counts the time other processes hold the cores.
    """
    changes: dict[str, Any] = {"outer": outer}
    if cg_subsample is not None:
        changes["cg_subsample"] = cg_subsample
    config = maml_preset("paper", family).replace(iterations=iterations + 1, maml=changes)
    policy = initial_policy(config, seed=0).to(device)
    learner = MAMLLearner(policy, config.maml, device)
    sampler = VectorEnvSampler(family, config.meta_batch_size, device, horizon=config.horizon)
    state = IterationState.fresh(0, TASK_STREAM, SAMPLING_STREAM)
    rows = []
    load_before = os.getloadavg()[0]
    for _ in range(iterations + 1):
        cpu_start = time.process_time()
        row = meta_iteration(policy, learner, sampler, config, state)
        row["time/cpu_s"] = time.process_time() - cpu_start
        rows.append(row)
    rows = rows[1:]
    load_after = os.getloadavg()[0]
    sampler.close()

    def median(key: str) -> float:
        return statistics.median(row[key] for row in rows)

    seconds = median("time/iteration_s")
    env_seconds = median("time/env_s")
    return {
        "family": family,
        "outer": outer,
        "cg_subsample": config.maml.trpo.cg_subsample,
        "batch": f"{config.meta_batch_size} tasks x {config.episodes_per_task} episodes x "
                 f"{config.horizon or envs.family_spec(family).horizon} steps",
        "seconds_per_iteration": seconds,
        "cpu_seconds_per_iteration": median("time/cpu_s"),
        "load_average": [load_before, load_after],
        "sample_seconds": median("time/sample_s"),
        "env_seconds": env_seconds,
        "update_seconds": median("time/update_s"),
        # TRPO's update: gradient and conjugate gradient (with the curvature products), then line search
        **({"trust_region_seconds": median("time/trust_region_s"), "line_search_seconds": median("time/line_search_s")}
           if all("time/trust_region_s" in row for row in rows) else {}),
        "outside_env_share": 1.0 - env_seconds / seconds,
    }


def run(config: MAMLBenchConfig) -> dict[str, Any]:
    """Run every measurement of ``config``; returns the results."""
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    results: dict[str, Any] = {"device": str(device), "threads": config.threads, "sampler": [], "iterations": []}
    for family in config.sampler_families:
        results["sampler"].append(sampler_overhead(family, config.repeats, device))
    for family in config.iteration_families:
        results["iterations"].append(
            iteration_time(family, config.iterations, config.outer, device, config.cg_subsample)
        )
    return results


def report(results: dict[str, Any]) -> str:
    """Human-readable lines with the goals."""
    lines = [f"device {results['device']}, torch threads {results['threads']}", "",
             f"sampler: env steps/s with the policy in the loop vs the env alone (goal >= {GOALS['sampler_ratio']}x)"]
    for row in results["sampler"]:
        lines.append(
            f"  {row['family']:<16} {row['batch']:<36} env alone {row['env_alone_steps_per_s']:>9.0f}/s  "
            f"sampler {row['sampler_steps_per_s']:>9.0f}/s  ratio {row['ratio']:.2f}x "
            f"{'(meets goal)' if row['ratio'] >= GOALS['sampler_ratio'] else '(below goal)'}"
        )
    lines += ["", "meta-iteration at the paper config (sample support, adapt, sample query, outer update)"]
    for row in results["iterations"]:
        line = (
            f"  {row['family']:<16} {row['batch']:<36} cg_subsample {row['cg_subsample']:g}: "
            f"{row['seconds_per_iteration']:7.2f} s/iteration (CPU {row['cpu_seconds_per_iteration']:.2f} s, "
            f"load average {row['load_average'][0]:.1f}-{row['load_average'][1]:.1f}) "
            f"(sampling {row['sample_seconds']:.2f} s, of it env {row['env_seconds']:.2f} s; update "
            f"{row['update_seconds']:.2f} s"
        )
        if "trust_region_seconds" in row:
            line += (f", of it gradient and conjugate gradient {row['trust_region_seconds']:.2f} s, "
                     f"line search {row['line_search_seconds']:.2f} s")
        line += f"); outside simulation {100 * row['outside_env_share']:.0f}%"
        if row["family"] == "Point2DNav":
            line += (f"; goal < {GOALS['point_seconds']:.0f} s, learn2learn MAML-TRPO {LEARN2LEARN_SECONDS:.0f} s "
                     f"({LEARN2LEARN_SECONDS / row['seconds_per_iteration']:.0f}x faster)")
        else:
            line += f"; goal <= {100 * GOALS['outside_share']:.0f}% outside simulation"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    config = parse(MAMLBenchConfig, argv, prog="metarl bench maml")
    for family in (*config.sampler_families, *config.iteration_families):
        envs.family_spec(family)
    results = run(config)
    print(json.dumps(results, indent=2) if config.json else report(results))
    return 0
