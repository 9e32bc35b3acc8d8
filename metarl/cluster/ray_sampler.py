"""A sampler that spreads a meta-batch's tasks over Ray actors.

:class:`RaySampler` implements :class:`metarl.core.sampler.Sampler`, so the trainers
use it unchanged (``metarl train maml --sampler ray --workers N``). The learner
stays in the driver process, on its CPU or GPU; only sampling moves out.

- **Layout.** The ``T`` tasks of every call are cut into ``W`` contiguous
  blocks, as even as possible (5 tasks on 2 workers: tasks 0-2 and 3-4). Each
  actor keeps a :class:`~metarl.core.sampler.VectorEnvSampler` for its block, that
  is one batched vector env of ``block * E`` sub-envs, and per env step does
  one batched policy forward with the per-task parameters of its block.
- **Same episodes as the local sampler.** The driver draws the call's
  randomness exactly as :class:`~metarl.core.sampler.VectorEnvSampler` does
  (:func:`metarl.core.sampler.draw_randomness`: one env reset seed, then the action
  noise ``[horizon, T, E, act_dim]``), so the caller's generator advances
  identically. The actor of the block starting at task ``a`` resets with seed
  ``reset_seed + a * E`` (sub-env ``i`` of a vector env reset with seed ``s``
  is seeded ``s + i``) and gets the noise of its tasks; the physics of one
  sub-env does not depend on the others, and the batched forward computes each
  task's matrices on its own. The returned episodes therefore equal the local
  sampler's (``torch.equal``) for the same generator state and parameters. One
  difference is invisible to every computation: after an episode ended early,
  the local sampler zeroes the steps it kept stepping (``x * 0``, which may be
  ``-0.0``) while an actor that stopped sooner pads with ``+0.0``.
- **Transport.** Per call the driver sends each actor its parameter rows and
  noise block as numpy arrays, and the actor sends back four numpy arrays;
  Ray's object store moves numpy arrays without pickling their data. The
  policy's architecture is sent with each call and the actor rebuilds the
  module only when it changes; the parameters are never taken from a module.
- **Timing.** ``last_seconds`` is the wall time of the call, ``last_env_seconds``
  the env time of the slowest actor (the critical path), and ``last_stats``
  splits the call into sending, the slowest actor's rollout, and receiving, so
  the overhead of Ray is ``last_seconds - max rollout``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

import metarl_envs as envs
from metarl.cluster.ray_support import init_ray, require_ray
from metarl.core.episodes import Episodes
from metarl.core.errors import UserError
from metarl.core.policy import GaussianMLPPolicy, Params
from metarl.core.rollout import env_dims
from metarl.core.sampler import (
    Sampler,
    TaskBlock,
    VectorEnvSampler,
    check_sample_args,
    draw_randomness,
)
from metarl.core.validation import check_int

FIELDS = ("observations", "actions", "rewards", "mask")
FREE_CPU_WAIT_SECONDS = 5.0
"""How long a new RaySampler waits for enough free CPUs before it gives up."""
Architecture = tuple[int, int, tuple[int, ...], str]
"""What an actor needs to rebuild the policy module: obs_dim, act_dim, hidden_sizes, nonlinearity."""


def task_blocks(num_tasks: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous ``(start, stop)`` task blocks, one per used worker, sizes differing by at most one.

    With more workers than tasks only ``num_tasks`` workers get a block.
    """
    check_int("num_tasks", num_tasks, 1)
    check_int("workers", workers, 1)
    used = min(workers, num_tasks)
    size, extra = divmod(num_tasks, used)
    blocks, start = [], 0
    for index in range(used):
        stop = start + size + (1 if index < extra else 0)
        blocks.append((start, stop))
        start = stop
    return blocks


ALIGNMENT_FLOATS = 4
"""Matrix start addresses must agree modulo this many float32 (16 bytes) for the CPU matrix
products to round alike; measured with torch 2.13's MKL (offsets 0, 4, 8, 12 agree, others not)."""


def alignment_padding(first_task: int, policy: GaussianMLPPolicy, episodes_per_task: int) -> int:
    """Extra tasks a block starting at ``first_task`` runs its policy forward over (see :class:`TaskBlock`).

    The forward's fresh tensors hold ``c`` floats per task (``c`` in: ``E * width`` of each
    layer output, ``out * in`` and ``out`` of each layer's parameters, should they be copied);
    a forward starting at task ``s`` puts task ``j`` at offset ``(j - s) * c``, which agrees
    with the whole meta-batch's ``j * c`` modulo :data:`ALIGNMENT_FLOATS` when ``s * c`` is 0
    modulo it for every ``c``.
    """
    sizes = (policy.obs_dim, *policy.hidden_sizes, policy.act_dim)
    counts = [episodes_per_task * out for out in sizes[1:]]
    counts += [out * inp for inp, out in zip(sizes[:-1], sizes[1:], strict=True)] + list(sizes[1:])
    period = math.lcm(*(ALIGNMENT_FLOATS // math.gcd(ALIGNMENT_FLOATS, count) for count in counts))
    return first_task % period


def param_layout(value: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """Shape, strides and storage offset (modulo :data:`ALIGNMENT_FLOATS`) of a parameter tensor."""
    return tuple(value.shape), tuple(value.stride()), value.storage_offset() % ALIGNMENT_FLOATS


def place_rows(rows: np.ndarray, layout: tuple[tuple[int, ...], tuple[int, ...], int], start: int) -> torch.Tensor:
    """Rows ``start:start + len(rows)`` of a tensor laid out like the driver's (``param_layout``).

    The driver's parameters may be expanded (stride 0 over tasks) or views; the block's
    rows get the same strides and alignment, so the forward reads them as it would there.
    """
    shape, strides, offset = layout
    size = offset + 1 + sum((n - 1) * stride for n, stride in zip(shape, strides, strict=True))
    full = torch.empty(size, dtype=torch.float32).as_strided(shape, strides, offset)
    window = full[start:start + len(rows)]
    if strides[0] == 0:  # every task reads the same memory
        window[0].copy_(torch.from_numpy(rows[0]))
    else:
        window.copy_(torch.from_numpy(rows))
    return window


def policy_architecture(policy: GaussianMLPPolicy) -> Architecture:
    """The fields of ``policy`` that the batched forward depends on (not its parameters)."""
    return policy.obs_dim, policy.act_dim, tuple(policy.hidden_sizes), policy.nonlinearity


class SamplerWorker:
    """The state of one actor: a vector-env sampler for its block of tasks (runs on the CPU).

    Plain class: :class:`RaySampler` wraps it with ``ray.remote``; tests may call it directly.
    """

    def __init__(self, family: str, num_tasks: int, horizon: int, env_threads: int) -> None:
        torch.set_num_threads(1)
        self.sampler = VectorEnvSampler(family, num_tasks, "cpu", horizon=horizon, env_threads=env_threads)
        self._architecture: Architecture | None = None
        self._policy: GaussianMLPPolicy | None = None

    def rollout(
        self,
        architecture: Architecture,
        task_params: dict[str, tuple[np.ndarray, tuple[tuple[int, ...], tuple[int, ...], int]]],
        tasks: Sequence[Any],
        episodes_per_task: int,
        reset_seed: int,
        noise: np.ndarray,
        block: TaskBlock,
    ) -> dict[str, Any]:
        """Episodes of this block as numpy arrays, with the rollout's wall and env seconds.

        ``task_params`` maps each name to the rows ``first - padding:first + tasks`` and the
        driver's layout of the whole tensor (:func:`param_layout`).
        """
        if architecture != self._architecture:
            obs_dim, act_dim, hidden_sizes, nonlinearity = architecture
            self._policy = GaussianMLPPolicy(obs_dim, act_dim, hidden_sizes, nonlinearity=nonlinearity)
            self._architecture = architecture
        assert self._policy is not None
        start = block.first_task - block.padding_tasks
        params = {name: place_rows(rows, layout, start) for name, (rows, layout) in task_params.items()}
        episodes = self.sampler.rollout(
            self._policy, params, tasks, episodes_per_task, reset_seed, torch.tensor(noise), block=block
        )
        return {
            "observations": episodes.observations.numpy(),  # [block, E, H, obs_dim]
            "actions": episodes.actions.numpy(),  # [block, E, H, act_dim]
            "rewards": episodes.rewards.numpy(),  # [block, E, H]
            "mask": episodes.mask.numpy(),  # [block, E, H]
            "seconds": self.sampler.last_seconds,
            "env_seconds": self.sampler.last_env_seconds,
        }

    def ping(self) -> None:
        """Nothing: a round trip to the actor measures Ray's cost of one call."""

    def close(self) -> None:
        self.sampler.close()


def _free_cpus(ray: Any, needed: float, wait_seconds: float) -> float:
    """Free CPUs of the Ray cluster, waiting up to ``wait_seconds`` for ``needed`` (actors just killed
    release theirs a moment later)."""
    deadline = time.monotonic() + wait_seconds
    available = ray.available_resources().get("CPU", 0)
    while available < needed and time.monotonic() < deadline:
        time.sleep(0.2)
        available = ray.available_resources().get("CPU", 0)
    return available


class BlockSampler(Sampler):
    """Cuts every call into task blocks, runs each on a :class:`SamplerWorker`, joins the episodes.

    The workers here are in-process and run one after another: the reference that
    :class:`RaySampler` (the same blocks on actors) must match, and a debugging aid.
    Subclasses replace :meth:`_run_blocks`.

    Args:
        family: a family of :data:`envs.FAMILIES`.
        num_tasks: ``T``, the number of tasks of every call.
        workers: ``W``, the number of blocks (at most ``T``).
        device: where the episodes are returned (the learner's device).
        seed: seeds the generator used when ``sample`` is called without one.
        horizon: episode length; defaults to the family's registered horizon.
    """

    def __init__(
        self,
        family: str,
        num_tasks: int,
        workers: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
        horizon: int | None = None,
    ) -> None:
        spec = envs.family_spec(family)
        self.blocks = task_blocks(num_tasks, workers)
        horizon = spec.horizon if horizon is None else horizon
        check_int("horizon", horizon, 1)
        self.family, self.num_tasks, self.workers = family, num_tasks, workers
        self.device = torch.device(device)
        self.horizon = horizon
        self.obs_dim, self.act_dim = env_dims(family)
        self.default_generator = torch.Generator().manual_seed(int(seed))
        self.last_seconds = 0.0
        self.last_env_seconds = 0.0
        self.last_stats: dict[str, float] = {}
        self._workers: list[SamplerWorker] = []

    def _run_blocks(self, requests: list[tuple[Any, ...]]) -> tuple[list[dict[str, Any]], float]:
        """Results of ``SamplerWorker.rollout(*request)``, one per block, and when sending ended."""
        if not self._workers:
            self._workers = [SamplerWorker(self.family, b - a, self.horizon, 1) for a, b in self.blocks]
        sent = time.perf_counter()
        return [worker.rollout(*request) for worker, request in zip(self._workers, requests, strict=True)], sent

    def sample(
        self,
        policy: GaussianMLPPolicy,
        task_params: Params,
        tasks: Sequence[Any],
        episodes_per_task: int,
        generator: torch.Generator | None = None,
    ) -> Episodes:
        """Collect ``episodes_per_task`` episodes of each task (see :meth:`metarl.core.sampler.Sampler.sample`)."""
        start = time.perf_counter()
        check_sample_args(self.num_tasks, task_params, tasks, episodes_per_task)
        generator = self.default_generator if generator is None else generator
        reset_seed, noise = draw_randomness(generator, self.horizon, self.num_tasks, episodes_per_task, self.act_dim)
        noise_array = noise.numpy()  # [horizon, tasks, episodes, act_dim]
        params = {name: value.detach().cpu() for name, value in task_params.items()}
        layouts = {name: param_layout(value) for name, value in params.items()}
        arrays = {name: value.numpy() for name, value in params.items()}
        architecture = policy_architecture(policy)
        tasks = list(tasks)
        requests = []
        for a, b in self.blocks:
            padding = alignment_padding(a, policy, episodes_per_task)
            requests.append((
                architecture,
                {name: (np.ascontiguousarray(arrays[name][a - padding:b]), layouts[name]) for name in arrays},
                tasks[a:b],
                episodes_per_task,
                reset_seed + a * episodes_per_task,
                np.ascontiguousarray(noise_array[:, a:b]),
                TaskBlock(self.num_tasks, a, padding),
            ))
        results, sent = self._run_blocks(requests)
        received = time.perf_counter()
        episodes = Episodes(
            **{
                name: torch.from_numpy(np.concatenate([result[name] for result in results])).to(self.device)
                for name in FIELDS
            },
            tasks=tasks,
        )
        end = time.perf_counter()
        slowest = max(result["seconds"] for result in results)
        self.last_seconds = end - start
        self.last_env_seconds = max(result["env_seconds"] for result in results)
        self.last_stats = {
            "send_s": sent - start,
            "wait_s": received - sent,
            "assemble_s": end - received,
            "slowest_rollout_s": slowest,
            "overhead_s": self.last_seconds - slowest,
            "sent_mb": sum(
                rows.nbytes for request in requests for rows, _ in request[1].values()
            ) / 1e6 + noise_array.nbytes / 1e6,
            "received_mb": sum(result[name].nbytes for result in results for name in FIELDS) / 1e6,
        }
        return episodes

    def close(self) -> None:
        """Close the workers' vector envs."""
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.close()


class RaySampler(BlockSampler):
    """Sampler backend on Ray actors, one per task block (see the module docstring).

    Args:
        family, num_tasks, workers, device, seed, horizon: as :class:`BlockSampler`;
            ``workers`` actors are started (at most ``num_tasks``).
        address: an existing Ray cluster to connect to; ``None`` starts a local
            instance on this machine with ``max(cpu_count, workers * cpus_per_worker)``
            CPUs (unless Ray is already running in this process).
        cpus_per_worker: CPUs each actor reserves (and the threads of its physics pool).

    Raises:
        UserError: Ray is not installed, or the cluster has fewer CPUs than the actors need.
    """

    def __init__(
        self,
        family: str,
        num_tasks: int,
        workers: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
        horizon: int | None = None,
        address: str | None = None,
        cpus_per_worker: int = 1,
    ) -> None:
        super().__init__(family, num_tasks, workers, device, seed, horizon)
        check_int("cpus_per_worker", cpus_per_worker, 1)
        ray = require_ray()
        needed = len(self.blocks) * cpus_per_worker
        self._started_ray = not ray.is_initialized()
        init_ray(address, num_cpus=None if address else max(os.cpu_count() or 1, needed))
        available = _free_cpus(ray, needed, wait_seconds=FREE_CPU_WAIT_SECONDS)
        if available < needed:  # the actors would wait for CPUs forever
            if self._started_ray:
                ray.shutdown()
            raise UserError(
                f"--workers {len(self.blocks)} needs {needed} CPUs on the Ray cluster, which has {available:g} "
                "free; use fewer workers or add nodes"
            )
        remote = ray.remote(num_cpus=cpus_per_worker)(SamplerWorker)
        self._ray = ray
        self._actors = [
            remote.remote(family, stop - start, self.horizon, cpus_per_worker) for start, stop in self.blocks
        ]

    def _run_blocks(self, requests: list[tuple[Any, ...]]) -> tuple[list[dict[str, Any]], float]:
        pending = [actor.rollout.remote(*request) for actor, request in zip(self._actors, requests, strict=True)]
        sent = time.perf_counter()
        return self._ray.get(pending), sent

    def round_trip_seconds(self, rounds: int = 20) -> float:
        """Median seconds of one empty call to every actor at once (Ray's scheduling, no data)."""
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            self._ray.get([actor.ping.remote() for actor in self._actors])
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]

    def close(self) -> None:
        """Stop the actors (and the local Ray instance if this sampler started it)."""
        actors, self._actors = self._actors, []
        for actor in actors:
            self._ray.kill(actor)
        if self._started_ray and self._ray.is_initialized():
            self._ray.shutdown()
            self._started_ray = False
