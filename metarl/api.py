"""Loading a trained run from Python, adapting its policy to new episodes, acting with it.

A run directory written by ``metarl train maml|pretrain|random-init`` holds a
Gaussian MLP policy that adapts by policy-gradient steps (docs/design.md, "Run
files"). :func:`load_run` reads it back as an :class:`AdaptiveRun`, which knows the
run's adaptation settings (inner learning rate, objective, discount, GAE lambda,
advantage normalisation), so that Python code adapts exactly as ``metarl
evaluate`` does:

    run = load_run("runs/demo")
    tasks = sample_tasks(run.family, "test", 4, seed=0)
    sampler = run.sampler(len(tasks))
    params = run.initial_params(len(tasks))              # [tasks, ...] per tensor
    support = sampler.sample(run.policy, params, tasks, 10, torch.Generator().manual_seed(0))
    adapted = run.adapt([support])                       # one gradient step per task
    actions = run.act(observations, adapted)             # [tasks, act_dim], env units

ProtoNet runs are read with :meth:`metarl.identification.identifier.TaskIdentifier.load`, fine-tune
runs with :func:`metarl.algorithms.finetune.load_run`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarl.algorithms.adaptation import AdaptationSettings, Params, adapt
from metarl.core.episodes import Episodes
from metarl.core.policy import ActionMap, GaussianMLPPolicy, batched_policy_forward, stack_params
from metarl.core.sampler import VectorEnvSampler
from metarl.storage.runs import RunDir, load_policy

__all__ = ["GRADIENT_METHODS", "AdaptiveRun", "load_run", "make_env", "make_vector_env", "sample_tasks"]

#: Methods whose runs adapt by gradient steps from a stored policy.
GRADIENT_METHODS: tuple[str, ...] = ("maml", "pretrain", "random_init")


def sample_tasks(family: str, split: str, count: int, seed: int = 0) -> list[Any]:
    """``count`` tasks of ``family`` drawn from ``split`` with a generator seeded by ``seed``.

    Args:
        family: A registered family (``metarl.families()``).
        split: ``train``, ``test`` or ``ood``.
        count: Number of tasks.
        seed: Seed of the ``np.random.Generator`` the draw uses.
    """
    import metarl_envs as envs

    return envs.distribution(family).sample(count, split, np.random.default_rng(seed))


def make_env(family: str, task: Any | None = None, **kwargs: Any) -> Any:
    """A single env of ``family`` (``gym.make`` of its id), set to ``task`` if given.

    The task takes effect at the next ``reset`` (``env.unwrapped.set_task`` changes
    it later; ``reset(options={"task": task})`` does both at once).
    """
    import gymnasium as gym

    import metarl_envs as envs

    env = gym.make(envs.env_id(family), **kwargs)
    if task is not None:
        env.unwrapped.set_task(task)
    return env


def make_vector_env(family: str, tasks: Sequence[Any], **kwargs: Any) -> Any:
    """The batched env of ``family`` with one sub-env per task (``gym.make_vec``).

    Tasks take effect at the first ``reset``; ``set_tasks`` changes them later.
    """
    import gymnasium as gym

    import metarl_envs as envs

    vector_env = gym.make_vec(
        envs.env_id(family), num_envs=len(tasks), vectorization_mode="vector_entry_point", **kwargs
    )
    vector_env.unwrapped.set_tasks(list(tasks))
    return vector_env


@dataclasses.dataclass(frozen=True)
class AdaptiveRun:
    """A run whose policy adapts by gradient steps, with the settings it adapts with.

    Attributes:
        path: The run directory.
        method: ``maml``, ``pretrain`` or ``random_init``.
        family: The task family it was trained on.
        config: The run's ``config.json``.
        policy: The stored policy (on CPU; never mutated by this class).
        adaptation: How it adapts (inner lr and its schedule, objective, discount, GAE lambda,
            advantage normalisation), read from ``config.json`` as ``metarl evaluate`` reads it.
        horizon: Episode length the run used.
        action_map: Maps the policy's normalised actions onto the env's action box.
    """

    path: Path
    method: str
    family: str
    config: dict[str, Any]
    policy: GaussianMLPPolicy
    adaptation: AdaptationSettings
    horizon: int | None
    action_map: ActionMap

    def sampler(self, num_tasks: int, device: str | torch.device = "cpu") -> VectorEnvSampler:
        """An in-process sampler for ``num_tasks`` tasks of the run's family and horizon."""
        return VectorEnvSampler(self.family, num_tasks, device, horizon=self.horizon)

    def initial_params(self, num_tasks: int) -> Params:
        """The stored parameters, repeated per task (each tensor ``[tasks, ...]``)."""
        shared = {name: value.detach() for name, value in self.policy.params().items()}
        return stack_params(shared, num_tasks)

    def adapt(self, episodes_per_step: Sequence[Episodes], params: Params | None = None) -> Params:
        """Adapt with one gradient step per entry of ``episodes_per_step``, as ``metarl evaluate`` does.

        Args:
            episodes_per_step: Step ``j``'s episodes, collected with the parameters
                after ``j`` steps (``[tasks, episodes, time, ...]`` each).
            params: Starting parameters (default: the stored ones, for every task).

        Returns:
            The adapted parameters, each tensor ``[tasks, ...]``.
        """
        if len(episodes_per_step) == 0:
            raise ValueError("episodes_per_step must hold at least one step's episodes")
        start = self.initial_params(episodes_per_step[0].num_tasks) if params is None else params
        settings = self.adaptation
        adapted = adapt(
            self.policy, start, episodes_per_step, settings.lrs(len(episodes_per_step)),
            settings.inner_objective, settings.discount, settings.gae_lambda,
            normalize_advantages=settings.normalize_advantages,
        )
        return {name: value.detach() for name, value in adapted.items()}

    def act(
        self,
        observations: np.ndarray | torch.Tensor,
        params: Params,
        deterministic: bool = True,
        generator: torch.Generator | None = None,
    ) -> np.ndarray:
        """Env actions for one observation per task, with per-task parameters.

        Args:
            observations: ``[tasks, obs_dim]``, one row per task of ``params``.
            params: Per-task parameters (:meth:`initial_params` or :meth:`adapt`).
            deterministic: Take the mean action; otherwise sample from the Gaussian.
            generator: Source of the sampling noise when not deterministic.

        Returns:
            ``[tasks, act_dim]`` actions mapped to and clipped to the env's action box.
        """
        obs = torch.as_tensor(np.asarray(observations), dtype=torch.float32)  # [tasks, obs_dim]
        if obs.ndim != 2 or obs.shape[1] != self.policy.obs_dim:
            raise ValueError(f"observations must have shape [tasks, {self.policy.obs_dim}], got {tuple(obs.shape)}")
        with torch.no_grad():
            mean, log_std = batched_policy_forward(self.policy, params, obs[:, None, :])  # [tasks, 1, act]
            action = mean[:, 0]
            if not deterministic:
                noise = torch.randn(action.shape, generator=generator)
                action = action + noise * log_std.exp()
        return self.action_map(action.double().numpy())


def load_run(path: str | os.PathLike[str]) -> AdaptiveRun:
    """Read a ``maml``, ``pretrain`` or ``random_init`` run directory.

    Raises:
        FileNotFoundError: no run (or no checkpoint) at ``path``.
        ValueError: a run of another method (the message says how to read it).
    """
    run_dir = RunDir(path)
    config = run_dir.read_config()
    method = config["method"]
    if method not in GRADIENT_METHODS:
        readers = {"protonet": "metarl.identification.identifier.TaskIdentifier.load", "finetune": "metarl.algorithms.finetune.load_run"}
        hint = f"; read it with {readers[method]}" if method in readers else ""
        raise ValueError(f"load_run reads runs of method {', '.join(GRADIENT_METHODS)}; "
                         f"{run_dir.path} is a {method!r} run{hint}")
    adaptation = AdaptationSettings.from_config(config)
    family = str(config["family"])
    env = make_env(family)
    action_map = ActionMap.from_space(env.action_space)
    env.close()
    return AdaptiveRun(
        path=run_dir.path, method=method, family=family, config=config,
        policy=load_policy(run_dir, config), horizon=config.get("horizon"), action_map=action_map,
        adaptation=adaptation,
    )
