"""Collecting episodes for a meta-batch of tasks, each task with its own policy parameters.

:class:`Sampler` is the small interface the trainers and the evaluation use:
``sample(policy, task_params, tasks, episodes_per_task, generator) -> Episodes``.
Another backend (for example workers on other machines) implements the same
method and the trainers do not change.

:class:`VectorEnvSampler` is the in-process backend built on the suite's batched
vector env (DESIGN.md §4). For ``T`` tasks and ``E`` episodes per task it keeps
one vector env of ``T * E`` sub-envs, laid out task-major (sub-env ``t * E + e``
runs episode ``e`` of task ``t``), and per env step does exactly one batched
policy forward (:func:`metarl.policy.batched_policy_forward`, one parameter set
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
  generator. The env gets them through :class:`~metarl.policy.ActionMap`
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

Shapes of what is returned: see :mod:`metarl.episodes`.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import envs
from metarl.episodes import Episodes
from metarl.policy import ActionMap, GaussianMLPPolicy, Params, batched_policy_forward

_SEED_LIMIT = 2**31 - 1


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


def env_dims(family: str) -> tuple[int, int]:
    """Observation and action sizes of ``family`` (``ValueError`` listing families if unknown)."""
    vector_env = gym.make_vec(envs.env_id(family), num_envs=1, vectorization_mode="vector_entry_point")
    try:
        obs_shape = vector_env.single_observation_space.shape
        act_shape = vector_env.single_action_space.shape
    finally:
        vector_env.close()
    return int(np.prod(obs_shape)), int(np.prod(act_shape))


def draw_seed(generator: torch.Generator) -> int:
    """A non-negative int seed drawn from ``generator`` (for env resets and numpy streams)."""
    return int(torch.randint(0, _SEED_LIMIT, (1,), generator=generator).item())


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
            :class:`~metarl.episodes.Episodes` of shape ``[tasks, E, horizon, ...]``
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
    ) -> None:
        spec = envs.family_spec(family)
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks must be a positive int, got {num_tasks!r}")
        horizon = spec.horizon if horizon is None else horizon
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be a positive int, got {horizon!r}")
        self.family = family
        self.num_tasks = num_tasks
        self.device = torch.device(device)
        self.horizon = horizon
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
            )
            self._episodes_per_task = episodes_per_task
        return self._env

    def _check(self, task_params: Params, tasks: Sequence[Any], episodes_per_task: int) -> None:
        if len(tasks) != self.num_tasks:
            raise ValueError(f"this sampler runs {self.num_tasks} tasks per call, got {len(tasks)} tasks")
        if isinstance(episodes_per_task, bool) or not isinstance(episodes_per_task, int) or episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be a positive int, got {episodes_per_task!r}")
        for name, value in task_params.items():
            if value.shape[0] != self.num_tasks:
                raise ValueError(
                    f"task_params[{name!r}] has leading size {value.shape[0]}, expected one row per task "
                    f"({self.num_tasks}); use metarl.policy.stack_params for shared parameters"
                )

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
        self._check(task_params, tasks, episodes_per_task)
        generator = self.default_generator if generator is None else generator
        num_tasks, per_task, horizon = self.num_tasks, episodes_per_task, self.horizon
        num_envs = num_tasks * per_task
        obs_dim, act_dim, device = self.obs_dim, self.act_dim, self.device
        vector_env = self._vector_env(per_task)
        action_map = ActionMap.from_space(vector_env.single_action_space)
        vector_env.set_tasks([task for task in tasks for _ in range(per_task)])

        reset_seed = draw_seed(generator)
        noise = torch.randn(horizon, num_tasks, per_task, act_dim, generator=generator)
        noise = noise.to(device)  # [horizon, tasks, episodes, act_dim]
        params = {name: value.detach().to(device) for name, value in task_params.items()}

        obs_buffer = np.zeros((horizon, num_envs, obs_dim), dtype=np.float32)
        action_buffer = np.zeros((horizon, num_envs, act_dim), dtype=np.float32)
        reward_buffer = np.zeros((horizon, num_envs), dtype=np.float32)
        mask_buffer = np.zeros((horizon, num_envs), dtype=np.float32)
        obs_torch = torch.from_numpy(obs_buffer)  # shares memory: [horizon, envs, obs_dim]
        action_torch = torch.from_numpy(action_buffer)  # [horizon, envs, act_dim]
        alive = np.ones(num_envs, dtype=bool)

        env_seconds = 0.0
        tick = time.perf_counter()
        obs, _ = vector_env.reset(seed=reset_seed)
        env_seconds += time.perf_counter() - tick
        steps = 0
        threads = torch_threads(1) if device.type == "cpu" else contextlib.nullcontext()
        with torch.no_grad(), threads:
            for t in range(horizon):
                obs_buffer[t] = obs.reshape(num_envs, obs_dim)
                obs_t = obs_torch[t].to(device).view(num_tasks, per_task, obs_dim)
                mean, log_std = batched_policy_forward(policy, params, obs_t)  # [T, E, act], [T, act]
                action = mean + torch.exp(log_std).unsqueeze(1) * noise[t]  # [T, E, act_dim]
                action_torch[t].copy_(action.reshape(num_envs, act_dim))
                mask_buffer[t] = alive
                tick = time.perf_counter()
                obs, reward, terminated, truncated, _ = vector_env.step(action_map(action_buffer[t]))
                env_seconds += time.perf_counter() - tick
                reward_buffer[t] = reward
                alive &= ~(terminated | truncated)
                steps = t + 1
                if not alive.any():
                    break

        # Steps after an episode ended are padding: zero everything there.
        mask = torch.from_numpy(mask_buffer[:steps]).T.reshape(num_tasks, per_task, steps)
        observations = obs_torch[:steps].transpose(0, 1).reshape(num_tasks, per_task, steps, obs_dim)
        actions = action_torch[:steps].transpose(0, 1).reshape(num_tasks, per_task, steps, act_dim)
        rewards = torch.from_numpy(reward_buffer[:steps]).T.reshape(num_tasks, per_task, steps)
        if steps < horizon:  # every episode ended early: pad to the horizon
            pad = horizon - steps
            mask = torch.nn.functional.pad(mask, (0, pad))
            rewards = torch.nn.functional.pad(rewards, (0, pad))
            observations = torch.nn.functional.pad(observations, (0, 0, 0, pad))
            actions = torch.nn.functional.pad(actions, (0, 0, 0, pad))
        episodes = Episodes(
            observations=(observations * mask.unsqueeze(-1)).to(device),  # [T, E, H, obs_dim]
            actions=(actions * mask.unsqueeze(-1)).to(device),  # [T, E, H, act_dim]
            rewards=(rewards * mask).to(device),  # [T, E, H]
            mask=mask.contiguous().to(device),  # [T, E, H]
            tasks=list(tasks),
        )
        self.last_env_seconds = env_seconds
        self.last_seconds = time.perf_counter() - start
        return episodes

    def close(self) -> None:
        """Close the vector env (a later call builds a new one)."""
        if self._env is not None:
            self._env.close()
            self._env = None
