"""Collecting episodes for a meta-batch of tasks, each task with its own policy parameters.

:class:`Sampler` is the small interface the trainers and the evaluation use:
``sample(policy, task_params, tasks, episodes_per_task, generator) -> Episodes``.
Another backend implements the same method and the trainers do not change:
:class:`metarl.cluster.ray_sampler.RaySampler` runs blocks of the tasks on Ray actors and
returns the same episodes (:class:`metarl.cluster.backends.SamplerChoice` picks the backend).

:class:`VectorEnvSampler` is the in-process backend built on the suite's batched
vector env (docs/design.md, "Batched environments and the sampler"). For ``T`` tasks and ``E`` episodes per task it keeps
one vector env of ``T * E`` sub-envs, laid out task-major (sub-env ``t * E + e``
runs episode ``e`` of task ``t``), steps it through the one rollout loop
(:class:`metarl.core.rollout.Rollout`), and per env step does exactly one batched
policy forward (:func:`metarl.core.policy.batched_policy_forward`, one parameter set
per task) under ``torch.no_grad``.

Choices, written down:

- **One episode per sub-env per call.** Every call resets all sub-envs (with a
  seed drawn from the caller's ``torch.Generator``) and runs at most ``horizon``
  steps. A sub-env whose episode ends early (terminated, or truncated because
  the simulation went unstable) stops contributing: gymnasium's next-step
  autoreset would start a second episode in it, so its later steps are masked
  out and zeroed. The loop stops as soon as every sub-env is done.
- **Randomness.** Actions are ``mean + std * noise`` with the noise
  ``[horizon, T, E, act_dim]`` drawn up front from the caller's generator (a
  CPU ``torch.Generator``) and then moved to the device, so CPU and CUDA runs
  with the same seed see the same noise; the env reset seed comes from the same
  generator. The env gets them through :class:`~metarl.core.policy.ActionMap`
  (scaled from [-1, 1] onto its action box and clipped, as rllab's
  ``normalize``); episodes keep the raw Gaussian samples, so log-probabilities
  are exact.
- **Speed.** Observations, actions, rewards and masks live in preallocated
  float32 numpy buffers that torch views without copying; per step there is one
  numpy cast of the observations, one forward and one copy of the actions back.
  On CPU the loop runs torch on one thread (:func:`torch_threads`), whatever
  the trainer's ``--threads``: the per-step forward is too small to share, and
  torch's idle OpenMP workers spin on a core after every parallel operation.
  With two torch threads the MuJoCo physics threads of 400 HalfCheetah
  sub-envs took 1.5x as long (2.0 s instead of 1.3 s per 80k steps on the
  2-core dev machine).

Shapes of what is returned: see :mod:`metarl.core.episodes`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import metarl_envs as envs
from metarl.core.episodes import Episodes
from metarl.core.policy import ActionMap, GaussianMLPPolicy, Params, batched_policy_forward
from metarl.core.rollout import Rollout, draw_seed, env_dims
from metarl.core.validation import check_int, check_optional_int


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(count)``, then restore the previous count."""
    previous = torch.get_num_threads()
    if previous == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclasses.dataclass(frozen=True)
class TaskBlock:
    """Where a sampler's tasks sit in a meta-batch that is sampled in blocks (by several workers).

    The CPU matrix products of the batched policy forward (MKL) may round differently when a
    matrix starts at a different address modulo 16 bytes. To give every task the bits it gets
    when the whole meta-batch runs in one process, a block keeps its observations in a buffer
    laid out for the whole meta-batch and runs the forward over ``padding_tasks`` extra tasks
    before its own, so that the forward's fresh tensors put each task's rows at the same
    alignment (see :func:`metarl.cluster.ray_sampler.alignment_padding`).
    """

    total_tasks: int
    """Tasks in the whole meta-batch."""
    first_task: int
    """Index of this block's first task in the meta-batch."""
    padding_tasks: int = 0
    """Tasks before ``first_task`` included in the policy forward (their outputs are dropped)."""

    def __post_init__(self) -> None:
        if not 0 <= self.padding_tasks <= self.first_task < self.total_tasks:
            raise ValueError(
                f"TaskBlock needs 0 <= padding_tasks <= first_task < total_tasks, got {self.padding_tasks}, "
                f"{self.first_task}, {self.total_tasks}"
            )


def draw_randomness(
    generator: torch.Generator, horizon: int, num_tasks: int, episodes_per_task: int, act_dim: int
) -> tuple[int, torch.Tensor]:
    """The randomness of one sampling call, drawn from ``generator`` in a fixed order.

    Returns the env reset seed (sub-env ``i`` is reset with ``seed + i``) and the action
    noise ``[horizon, tasks, episodes, act_dim]`` on the CPU.
    """
    reset_seed = draw_seed(generator)
    noise = torch.randn(horizon, num_tasks, episodes_per_task, act_dim, generator=generator)
    return reset_seed, noise


def check_sample_args(num_tasks: int, task_params: Params, tasks: Sequence[Any], episodes_per_task: int) -> None:
    """``ValueError`` unless the arguments of a ``sample`` call fit a sampler of ``num_tasks`` tasks."""
    if len(tasks) != num_tasks:
        raise ValueError(f"this sampler runs {num_tasks} tasks per call, got {len(tasks)} tasks")
    check_int("episodes_per_task", episodes_per_task, 1)
    for name, value in task_params.items():
        if value.shape[0] != num_tasks:
            raise ValueError(
                f"task_params[{name!r}] has leading size {value.shape[0]}, expected one row per task "
                f"({num_tasks}); use metarl.core.policy.stack_params for shared parameters"
            )


class Sampler(ABC):
    """Collects episodes for a batch of tasks, each task with its own policy parameters."""

    @abstractmethod
    def sample(
        self,
        policy: GaussianMLPPolicy,
        task_params: Params,
        tasks: Sequence[Any],
        episodes_per_task: int,
        generator: torch.Generator,
    ) -> Episodes:
        """Run ``episodes_per_task`` episodes of each task.

        Args:
            policy: the module that defines the architecture (never mutated).
            task_params: one parameter set per task, each tensor ``[tasks, ...]``.
            tasks: the tasks, one per leading row of ``task_params``.
            episodes_per_task: ``E``.
            generator: the only source of randomness (a CPU ``torch.Generator``).

        Returns:
            :class:`~metarl.core.episodes.Episodes` of shape ``[tasks, E, horizon, ...]``
            on the sampler's device.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release environments or workers."""


class VectorEnvSampler(Sampler):
    """In-process sampler on the batched vector env of ``family``.

    Args:
        family: a family of :data:`envs.FAMILIES`.
        num_tasks: ``T``, the number of tasks of every call.
        device: where the policy runs and where the episodes are returned.
        seed: seeds the sampler's own generator, used only when ``sample`` is
            called without one (the trainers always pass theirs).
        horizon: episode length; defaults to the family's registered horizon.
        env_threads: threads of a MuJoCo family's physics pool (None: the env's default, all
            CPUs); results do not depend on it. Families without a pool ignore it.

    After each call, ``last_env_seconds`` and ``last_seconds`` hold the time spent
    inside ``env.step``/``env.reset`` and the total time of the call.
    """

    def __init__(
        self,
        family: str,
        num_tasks: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
        horizon: int | None = None,
        env_threads: int | None = None,
    ) -> None:
        spec = envs.family_spec(family)
        check_int("num_tasks", num_tasks, 1)
        horizon = spec.horizon if horizon is None else horizon
        check_int("horizon", horizon, 1)
        self.family = family
        self.num_tasks = num_tasks
        self.device = torch.device(device)
        self.horizon = horizon
        check_optional_int("env_threads", env_threads, 1)
        vector_class = getattr(importlib.import_module(spec.module), spec.vector_env_class)
        takes_threads = "num_threads" in inspect.signature(vector_class).parameters
        self._env_kwargs = {"num_threads": env_threads} if env_threads is not None and takes_threads else {}
        self.obs_dim, self.act_dim = env_dims(family)
        self.default_generator = torch.Generator().manual_seed(int(seed))
        self._env: gym.vector.VectorEnv | None = None
        self._episodes_per_task = 0
        self.last_env_seconds = 0.0
        self.last_seconds = 0.0

    def _vector_env(self, episodes_per_task: int) -> gym.vector.VectorEnv:
        """The vector env with ``T * E`` sub-envs (rebuilt only when ``E`` changes)."""
        if self._env is None or episodes_per_task != self._episodes_per_task:
            self.close()
            self._env = gym.make_vec(
                envs.env_id(self.family),
                num_envs=self.num_tasks * episodes_per_task,
                vectorization_mode="vector_entry_point",
                max_episode_steps=self.horizon,
                **self._env_kwargs,
            )
            self._episodes_per_task = episodes_per_task
        return self._env

    def sample(
        self,
        policy: GaussianMLPPolicy,
        task_params: Params,
        tasks: Sequence[Any],
        episodes_per_task: int,
        generator: torch.Generator | None = None,
    ) -> Episodes:
        """Collect ``episodes_per_task`` episodes of each task (see :meth:`Sampler.sample`)."""
        start = time.perf_counter()
        check_sample_args(self.num_tasks, task_params, tasks, episodes_per_task)
        generator = self.default_generator if generator is None else generator
        reset_seed, noise = draw_randomness(generator, self.horizon, self.num_tasks, episodes_per_task, self.act_dim)
        return self.rollout(policy, task_params, tasks, episodes_per_task, reset_seed, noise, start)

    def rollout(
        self,
        policy: GaussianMLPPolicy,
        task_params: Params,
        tasks: Sequence[Any],
        episodes_per_task: int,
        reset_seed: int,
        noise: torch.Tensor,
        start: float | None = None,
        block: TaskBlock | None = None,
    ) -> Episodes:
        """Collect the episodes with the randomness given explicitly (see :func:`draw_randomness`).

        Sub-env ``i`` is reset with seed ``reset_seed + i`` and takes the action noise
        ``noise[:, i // E, i % E]``; :meth:`sample` is this with both drawn from its generator.
        A backend that gives each worker a contiguous block of tasks starting at task ``a``
        reproduces :meth:`sample` with ``reset_seed + a * E``, that block of ``noise`` and
        ``block`` (see :class:`TaskBlock`: the policy forward must see the same memory layout).

        Args:
            task_params: one row per task, or with ``block``, ``block.padding_tasks`` rows
                (any parameters) before the rows of this sampler's tasks.
            noise: ``[horizon, tasks, episodes, act_dim]`` standard normal noise (CPU).
            start: ``time.perf_counter()`` at the start of the call, for ``last_seconds``.
            block: where these tasks sit in a larger meta-batch; ``None``: they are all of it.
        """
        start = time.perf_counter() if start is None else start
        block = TaskBlock(self.num_tasks, 0) if block is None else block
        if block.first_task + self.num_tasks > block.total_tasks:
            raise ValueError(f"{block} cannot hold this sampler's {self.num_tasks} tasks")
        pad = block.padding_tasks
        check_sample_args(pad + self.num_tasks, task_params, [None] * pad + list(tasks), episodes_per_task)
        num_tasks, per_task, horizon = self.num_tasks, episodes_per_task, self.horizon
        num_envs = num_tasks * per_task
        obs_dim, act_dim, device = self.obs_dim, self.act_dim, self.device
        if tuple(noise.shape) != (horizon, num_tasks, per_task, act_dim):
            raise ValueError(
                f"noise has shape {tuple(noise.shape)}, expected [horizon, tasks, episodes, act_dim] = "
                f"{[horizon, num_tasks, per_task, act_dim]}"
            )
        vector_env = self._vector_env(per_task)
        action_map = ActionMap.from_space(vector_env.single_action_space)
        vector_env.set_tasks([task for task in tasks for _ in range(per_task)])

        noise = noise.to(device)  # [horizon, tasks, episodes, act_dim]
        params = {name: value.detach().to(device) for name, value in task_params.items()}

        # The observation buffer has a row of the whole meta-batch per step, this block's in
        # its place: the forward's matrix products then read memory aligned as in one process.
        first = block.first_task
        obs_buffer = np.zeros((horizon, block.total_tasks * per_task, obs_dim), dtype=np.float32)
        own_envs = slice(first * per_task, (first + num_tasks) * per_task)
        action_buffer = np.zeros((horizon, num_envs, act_dim), dtype=np.float32)
        reward_buffer = np.zeros((horizon, num_envs), dtype=np.float32)
        mask_buffer = np.zeros((horizon, num_envs), dtype=np.float32)
        obs_torch = torch.from_numpy(obs_buffer)  # shares memory: [horizon, all envs, obs_dim]
        obs_window = obs_torch.view(horizon, block.total_tasks, per_task, obs_dim)[:, first - pad:first + num_tasks]
        action_torch = torch.from_numpy(action_buffer)  # [horizon, envs, act_dim]

        def act(t: int, obs: np.ndarray) -> np.ndarray:
            obs_buffer[t, own_envs] = obs.reshape(num_envs, obs_dim)
            obs_t = obs_window[t].to(device)  # [padding + T, E, obs_dim]
            mean, log_std = batched_policy_forward(policy, params, obs_t)  # [pad + T, E, act], [pad + T, act]
            mean, log_std = mean[pad:], log_std[pad:]
            action = mean + torch.exp(log_std).unsqueeze(1) * noise[t]  # [T, E, act_dim]
            action_torch[t].copy_(action.reshape(num_envs, act_dim))
            return action_buffer[t]

        rollout = Rollout(vector_env, act, action_map, reset_seed, horizon)
        threads = torch_threads(1) if device.type == "cpu" else contextlib.nullcontext()
        with torch.no_grad(), threads:
            for step in rollout:
                mask_buffer[step.t] = step.alive
                reward_buffer[step.t] = step.rewards
        steps = rollout.steps

        # Steps after an episode ended are padding: zero everything there.
        mask = torch.from_numpy(mask_buffer[:steps]).T.reshape(num_tasks, per_task, steps)
        observations = obs_torch[:steps, own_envs].transpose(0, 1).reshape(num_tasks, per_task, steps, obs_dim)
        actions = action_torch[:steps].transpose(0, 1).reshape(num_tasks, per_task, steps, act_dim)
        rewards = torch.from_numpy(reward_buffer[:steps]).T.reshape(num_tasks, per_task, steps)
        if steps < horizon:  # every episode ended early: pad to the horizon
            missing = horizon - steps
            mask = torch.nn.functional.pad(mask, (0, missing))
            rewards = torch.nn.functional.pad(rewards, (0, missing))
            observations = torch.nn.functional.pad(observations, (0, 0, 0, missing))
            actions = torch.nn.functional.pad(actions, (0, 0, 0, missing))
        episodes = Episodes(
            observations=(observations * mask.unsqueeze(-1)).to(device),  # [T, E, H, obs_dim]
            actions=(actions * mask.unsqueeze(-1)).to(device),  # [T, E, H, act_dim]
            rewards=(rewards * mask).to(device),  # [T, E, H]
            mask=mask.contiguous().to(device),  # [T, E, H]
            tasks=list(tasks),
        )
        self.last_env_seconds = rollout.env_seconds
        self.last_seconds = time.perf_counter() - start
        return episodes

    def close(self) -> None:
        """Close the vector env (a later call builds a new one)."""
        if self._env is not None:
            self._env.close()
            self._env = None
