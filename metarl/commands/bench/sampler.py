"""Sampler scale-out: env steps/s of the Ray sampler with 1, 2, ... workers beside the local sampler.

Measured side by side in one process, at HalfCheetahVel's paper batch by default
(40 tasks x 10 episodes x 200 steps; smaller with flags):

1. **Local**: :class:`~metarl.core.sampler.VectorEnvSampler` in this process.
2. **Ray, W workers**: :class:`~metarl.cluster.ray_sampler.RaySampler` on a local Ray
   instance (this machine only), the same parameters and generator seed, so
   every backend collects the same episodes.
3. **Overhead of Ray** per sampling call: the call's wall time minus the
   slowest actor's rollout (sending parameters and noise, scheduling, receiving
   and joining the episodes), with the megabytes sent and received; per
   meta-iteration it is ``inner_steps + 1`` calls.
4. **Learner update** (optional): one MAML outer update (the paper preset's
   learner) on the sampled episodes, in this process: the part that does not
   scale out.
5. **Model** (with the update): seconds per meta-iteration at more workers
   (:func:`scale_out_model`), with the learner on this CPU or on a GPU whose
   update time is an assumption.

Repeats are interleaved (local, Ray 1, Ray 2, local, ...) and the best rate of
each is kept, so load from other processes hurts all alike; the load average
(``os.getloadavg``) is printed before and after.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import tyro

import metarl_envs as envs
from metarl.algorithms.maml.learner import MAMLLearner
from metarl.algorithms.maml.training import initial_policy
from metarl.algorithms.presets import maml_preset
from metarl.cluster.ray_support import init_ray, require_ray
from metarl.core.policy import stack_params
from metarl.core.sampler import Sampler, VectorEnvSampler
from metarl.core.validation import check_int, check_ints


@dataclasses.dataclass(frozen=True)
class SamplerBenchConfig:
    """Env steps/s of the Ray sampler with 1..W workers beside the local sampler, and Ray's overhead."""

    family: str = "HalfCheetahVel"
    """Task family (its paper preset gives the policy)."""
    tasks: int = 40
    """Tasks per sampling call (meta-batch size)."""
    episodes: int = 10
    """Episodes per task."""
    horizon: int = 200
    """Steps per episode."""
    workers: tuple[int, ...] = (1, 2)
    """Ray worker counts to measure."""
    repeats: int = 2
    """Interleaved repeats (best kept), after one warm-up call per backend."""
    update: bool = True
    """Also time one outer update of the learner on the sampled episodes (CPU, this process)."""
    model_workers: tuple[int, ...] = (4, 16, 64)
    """Worker counts for the modelled meta-iteration time (see scale_out_model)."""
    gpu_update_seconds: float = 1.0
    """Assumed (not measured) seconds of one outer update on a GPU, for the model."""
    json: bool = False
    """Print the results as JSON."""

    def __post_init__(self) -> None:
        envs.family_spec(self.family)
        for name in ("tasks", "episodes", "horizon", "repeats"):
            check_int(f"--{name}", getattr(self, name), 1)
        check_ints("--workers", self.workers, 1, empty=False)


def run(config: SamplerBenchConfig) -> dict[str, Any]:
    """Every measurement of ``config``; returns the results (see the module docstring)."""
    require_ray()
    from metarl.cluster.ray_sampler import RaySampler

    torch.set_num_threads(1)
    load_before = os.getloadavg()
    # every sampler's actors live through the run (one sampler samples at a time): one CPU each
    init_ray(num_cpus=max(os.cpu_count() or 1, sum(config.workers)))
    preset = maml_preset("paper", config.family).replace(
        meta_batch_size=config.tasks, episodes_per_task=config.episodes, horizon=config.horizon
    )
    policy = initial_policy(preset, seed=0)
    tasks = envs.distribution(config.family).sample(config.tasks, "train", np.random.default_rng(0))
    params = stack_params({k: v.detach() for k, v in policy.params().items()}, config.tasks)
    samplers: dict[str, Sampler] = {"local": VectorEnvSampler(config.family, config.tasks, horizon=config.horizon)}
    for workers in config.workers:
        samplers[f"ray-{workers}"] = RaySampler(config.family, config.tasks, workers, horizon=config.horizon)
    rates: dict[str, list[float]] = {name: [] for name in samplers}
    stats: dict[str, list[dict[str, float]]] = {name: [] for name in samplers}
    episodes = None
    round_trips: dict[str, float] = {}
    try:
        for repeat in range(config.repeats + 1):  # repeat 0 warms up (actors start, envs are built)
            for name, sampler in samplers.items():
                generator = torch.Generator().manual_seed(repeat)
                episodes = sampler.sample(policy, params, tasks, config.episodes, generator)
                if repeat > 0:
                    rates[name].append(episodes.num_steps / sampler.last_seconds)
                    stats[name].append(dict(getattr(sampler, "last_stats", {}) or {},
                                            seconds=sampler.last_seconds, env_seconds=sampler.last_env_seconds))
        for name, sampler in samplers.items():
            if isinstance(sampler, RaySampler):
                round_trips[name] = sampler.round_trip_seconds()
    finally:
        for sampler in samplers.values():
            sampler.close()
    results: dict[str, Any] = {
        "family": config.family,
        "batch": f"{config.tasks} tasks x {config.episodes} episodes x {config.horizon} steps",
        "tasks": config.tasks,
        "episodes": config.episodes,
        "horizon": config.horizon,
        "cpu_count": os.cpu_count(),
        "inner_steps": preset.maml.inner_steps,
        "backends": [],
    }
    local_rate = max(rates["local"])
    for name in samplers:
        row: dict[str, Any] = {
            "backend": name,
            "steps_per_s": max(rates[name]),
            "ratio_to_local": max(rates[name]) / local_rate,
            "seconds_per_call": min(s["seconds"] for s in stats[name]),
            "env_seconds_per_call": min(s["env_seconds"] for s in stats[name]),
        }
        if name != "local":
            for key in ("overhead_s", "send_s", "assemble_s", "slowest_rollout_s", "sent_mb", "received_mb"):
                row[key] = statistics.median(s[key] for s in stats[name])
            row["overhead_per_iteration_s"] = row["overhead_s"] * (preset.maml.inner_steps + 1)
            row["round_trip_s"] = round_trips[name]
        results["backends"].append(row)
    if config.update:
        results["update_seconds"] = _update_seconds(preset, policy, samplers, tasks, config)
    results["load_average"] = [load_before, os.getloadavg()]
    if config.update:
        results["model"] = scale_out_model(results, config.model_workers, config.gpu_update_seconds)
        results["gpu_update_seconds_assumed"] = config.gpu_update_seconds
    return results


def scale_out_model(results: dict[str, Any], workers: Sequence[int], gpu_update_seconds: float) -> list[dict[str, Any]]:
    """Modelled seconds per meta-iteration at each worker count, from the measured figures.

    - An actor's rollout takes ``env steps of its block x s/step``, with s/step measured on
      one Ray worker (the slowest-actor rollout of ``ray-1``): each actor on its own core.
    - Blocks are ``ceil(T / W)`` tasks; at most ``T`` actors are used.
    - Ray's overhead per call is ``a + b * actors``: ``b`` is the largest per-actor cost
      of an empty call to all actors at once (``round_trip_s / actors``), ``a`` the rest
      of the overhead measured with the fewest workers (sending the parameters and noise,
      joining the episodes: the same bytes whatever the worker count).
    - A meta-iteration is ``inner_steps + 1`` sampling calls, one after another (each
      needs the parameters the previous one adapted), then one outer update: the
      measured CPU update, or ``gpu_update_seconds`` (an assumption).
    """
    rays = sorted((int(row["backend"].split("-")[1]), row) for row in results["backends"] if row["backend"] != "local")
    if not rays or "update_seconds" not in results:
        raise ValueError("the model needs a Ray measurement and the update time (--update)")
    one_workers, one = rays[0]
    per_step = one["slowest_rollout_s"] / (results["tasks"] / one_workers * results["episodes"] * results["horizon"])
    slope = max(row["round_trip_s"] / min(count, results["tasks"]) for count, row in rays)
    intercept = max(0.0, one["overhead_s"] - slope * one_workers)
    calls = results["inner_steps"] + 1
    rows = []
    for count in workers:
        actors = min(count, results["tasks"])
        block = math.ceil(results["tasks"] / actors)
        rollout = block * results["episodes"] * results["horizon"] * per_step
        overhead = intercept + slope * actors
        sampling = calls * (rollout + overhead)
        rows.append({
            "workers": count,
            "actors_used": actors,
            "tasks_per_actor": block,
            "rollout_s_per_call": rollout,
            "overhead_s_per_call": overhead,
            "sampling_s": sampling,
            "iteration_s_cpu_learner": sampling + results["update_seconds"],
            "iteration_s_gpu_learner": sampling + gpu_update_seconds,
            "bottleneck_cpu_learner": "update" if results["update_seconds"] > sampling else "sampling",
            "bottleneck_gpu_learner": "update" if gpu_update_seconds > sampling else "sampling",
        })
    return rows


def _update_seconds(preset: Any, policy: torch.nn.Module, samplers: dict[str, Sampler], tasks: list[Any],
                    config: SamplerBenchConfig) -> float:
    """Seconds of one outer update of the paper preset's learner on freshly sampled episodes (CPU)."""
    learner = MAMLLearner(policy, preset.maml, torch.device("cpu"))
    sampler = VectorEnvSampler(config.family, config.tasks, horizon=config.horizon)
    generator = torch.Generator().manual_seed(0)
    params = stack_params({k: v.detach() for k, v in policy.params().items()}, config.tasks)
    support = [sampler.sample(policy, params, tasks, config.episodes, generator)]
    for _ in range(1, preset.maml.inner_steps):
        support.append(sampler.sample(policy, learner.adapted_params(support), tasks, config.episodes, generator))
    query = sampler.sample(policy, learner.adapted_params(support), tasks, config.episodes, generator)
    sampler.close()
    start = time.perf_counter()
    learner.meta_update(support, query)
    return time.perf_counter() - start


def report(results: dict[str, Any]) -> str:
    """Human-readable lines: rates and ratios, Ray's overhead, the update, the load average."""
    before, after = results["load_average"]
    lines = [
        f"{results['family']} {results['batch']}, {results['cpu_count']} CPUs, load average "
        f"{before[0]:.2f} {before[1]:.2f} {before[2]:.2f} before, {after[0]:.2f} {after[1]:.2f} {after[2]:.2f} after",
        "",
        "env steps/s (best of the repeats; ratio to the local sampler measured in the same run)",
    ]
    for row in results["backends"]:
        line = (f"  {row['backend']:<8} {row['steps_per_s']:>9.0f}/s  ratio {row['ratio_to_local']:.2f}x  "
                f"{row['seconds_per_call']:.3f} s/call (env {row['env_seconds_per_call']:.3f} s)")
        if "overhead_s" in row:
            line += (f"  Ray overhead {row['overhead_s']:.3f} s/call = {row['overhead_per_iteration_s']:.3f} s per "
                     f"meta-iteration ({results['inner_steps'] + 1} calls; send {row['send_s']:.3f} s, join "
                     f"{row['assemble_s']:.3f} s, {row['sent_mb']:.1f} MB out, {row['received_mb']:.1f} MB back; "
                     f"empty call to all actors {1000 * row['round_trip_s']:.1f} ms)")
        lines.append(line)
    if "update_seconds" in results:
        lines += ["", f"learner: one outer update on these episodes takes {results['update_seconds']:.2f} s (CPU)"]
    if "model" in results:
        lines += ["", "model: seconds per meta-iteration (sampling + update), each actor on its own core; the GPU "
                  f"update is an assumption ({results['gpu_update_seconds_assumed']:g} s, not measured)"]
        for row in results["model"]:
            lines.append(
                f"  {row['workers']:>3} workers ({row['actors_used']} actors x {row['tasks_per_actor']} tasks): "
                f"sampling {row['sampling_s']:.2f} s (rollout {row['rollout_s_per_call']:.2f} + Ray "
                f"{row['overhead_s_per_call']:.3f} s per call); CPU learner {row['iteration_s_cpu_learner']:.2f} s "
                f"(bottleneck: {row['bottleneck_cpu_learner']}), GPU learner {row['iteration_s_gpu_learner']:.2f} s "
                f"(bottleneck: {row['bottleneck_gpu_learner']})"
            )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    config = tyro.cli(SamplerBenchConfig, args=argv, prog="metarl bench sampler")
    results = run(config)
    print(json.dumps(results, indent=2) if config.json else report(results))
    return 0
