"""Contexts: sets of transitions collected in one task, for task identification.

A *transition* is one real environment step stored as a flat float32 vector in
the layout ``[s (obs_dim), a (act_dim), r (1), s' (obs_dim)]``, so
``transition_dim = 2 * obs_dim + act_dim + 1`` (:func:`transition_dim`,
:func:`split_transitions`). The action stored is the one the env applied (the
behaviour's action clipped to the action space).

A *context* is a set of ``C`` transitions from one task; the shape used
throughout metarl is ``contexts  # [variants, contexts, C, transition_dim]``.
A context is C transitions drawn at random (without replacement) from one
episode of the task, as PEARL samples its contexts from a task's data rather
than taking consecutive steps (decorrelated transitions say more about the
task; Rakelly et al. 2019). The pseudo-steps of gymnasium's next-step
autoreset (the step that only resets a finished sub-env) and steps flagged
``sim_unstable`` are not transitions and are skipped. A context is a set: the
encoders that consume it are order-invariant. A robot's control loop can pass
the transitions of its current episode, consecutive or not.

Collection is in bulk from the family's batched vector env: one task per group
of ``envs_per_task`` sub-envs, every sub-env stepped in one call, with one
batched behaviour call per step (:func:`collect_transitions`, through the one rollout
loop :class:`metarl.core.rollout.Rollout`). Behaviours are
uniform random actions by default (:class:`UniformRandomBehaviour`) or a
Gaussian MLP policy (:class:`GaussianPolicyBehaviour`, e.g. the meta-policy of
a MAML run).

*Variants*: for a family whose split can produce only a few distinct tasks
(HalfCheetahCrippled: one disabled actuator among 4 in train/test, 2 in ood),
the variants of the split are those distinct tasks (:func:`distinct_variants`);
for continuous families every sampled task is a variant of its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

import metarl_envs as envs
from metarl.core.policy import ActionMap, GaussianMLPPolicy, Params, policy_forward
from metarl.core.rollout import Rollout, env_dims, space_dims
from metarl.core.validation import check_int
from metarl_envs.tasks import Task, check_split

#: How many tasks :func:`distinct_variants` draws to decide whether a split is finite.
_PROBE_DRAWS = 512
#: A split with at most this many distinct tasks among the probe draws is finite.
_MAX_DISCRETE_VARIANTS = 64


def transition_dim(obs_dim: int, act_dim: int) -> int:
    """Size of one stored transition ``[s, a, r, s']``."""
    return 2 * obs_dim + act_dim + 1


def split_transitions(
    transitions: np.ndarray | torch.Tensor, obs_dim: int, act_dim: int
) -> tuple[np.ndarray | torch.Tensor, ...]:
    """Views ``(s, a, r, s')`` of ``transitions  # [..., transition_dim]``.

    Returns ``s  # [..., obs_dim]``, ``a  # [..., act_dim]``, ``r  # [...]`` and
    ``s'  # [..., obs_dim]``.
    """
    expected = transition_dim(obs_dim, act_dim)
    if transitions.shape[-1] != expected:
        raise ValueError(
            f"transitions must end in transition_dim = 2*obs_dim + act_dim + 1 = {expected} "
            f"(layout [s, a, r, s'] for obs_dim={obs_dim}, act_dim={act_dim}), got last dim "
            f"{transitions.shape[-1]}"
        )
    s = transitions[..., :obs_dim]
    a = transitions[..., obs_dim : obs_dim + act_dim]
    r = transitions[..., obs_dim + act_dim]
    s_next = transitions[..., obs_dim + act_dim + 1 :]
    return s, a, r, s_next


class Behaviour(Protocol):
    """Chooses the actions of every sub-env at once: ``observations [n, obs_dim] -> [n, act_dim]``."""

    def __call__(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


class UniformRandomBehaviour:
    """Actions drawn uniformly from a bounded Box action space (the default behaviour)."""

    def __init__(self, action_space: gym.spaces.Box) -> None:
        if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
            raise ValueError(
                f"uniform random actions need a bounded action space, got low={action_space.low}, "
                f"high={action_space.high}"
            )
        self.low = np.asarray(action_space.low, dtype=np.float64)
        self.high = np.asarray(action_space.high, dtype=np.float64)

    def __call__(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # action: U(low, high) per dimension, independently per sub-env
        return rng.uniform(self.low, self.high, size=(len(observations), self.low.size))


class GaussianPolicyBehaviour:
    """Actions sampled from a Gaussian MLP policy (one batched forward per env step).

    Args:
        policy: the policy module (e.g. the meta-policy of a MAML run).
        params: parameters to evaluate it with; its own parameters by default.
        deterministic: use the mean action instead of sampling.
        action_map: maps the policy's normalised actions to the env's box
            (:class:`metarl.core.policy.ActionMap`); identity if omitted.
    """

    def __init__(
        self,
        policy: GaussianMLPPolicy,
        params: Params | None = None,
        deterministic: bool = False,
        action_map: ActionMap | None = None,
    ) -> None:
        self.policy = policy
        self.params = {k: v.detach() for k, v in (params or policy.params()).items()}
        self.deterministic = deterministic
        self.action_map = action_map

    def __call__(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        obs = torch.as_tensor(observations, dtype=torch.float32)  # [n, obs_dim]
        with torch.no_grad():
            mean, log_std = policy_forward(self.policy, self.params, obs)  # [n, act_dim], [act_dim]
        mean, std = mean.numpy().astype(np.float64), np.exp(log_std.numpy().astype(np.float64))
        action = mean if self.deterministic else mean + std * rng.standard_normal(mean.shape)
        return action if self.action_map is None else self.action_map(action)


def distinct_variants(family: str, split: str) -> list[Task] | None:
    """The distinct tasks of ``split`` if the split can produce only a few, else ``None``.

    Draws 512 tasks with a fixed generator: a split with at most 64 distinct
    tasks among them is finite (HalfCheetahCrippled: 4 actuators in train and
    test, 2 in ood), and its distinct tasks, sorted by their JSON, are returned.
    A continuous split (every draw new) returns ``None``.
    """
    check_split(split)
    draws = envs.distribution(family).sample(_PROBE_DRAWS, split, np.random.default_rng(0))
    unique = {task.task_id: task for task in draws}
    if len(unique) > _MAX_DISCRETE_VARIANTS:
        return None
    return sorted(unique.values(), key=lambda task: repr(sorted(task.to_dict().items())))


def collect_transitions(
    family: str,
    tasks: Sequence[Task],
    envs_per_task: int,
    transitions_per_env: int,
    behaviour: Behaviour | None = None,
    seed: int = 0,
    max_envs: int = 512,
    progress: bool = True,
) -> np.ndarray:
    """Run every task in ``envs_per_task`` sub-envs and keep their real transitions.

    Tasks are processed in chunks of at most ``max_envs`` sub-envs; each chunk is
    one batched vector env stepped until every sub-env has produced
    ``transitions_per_env`` real transitions (autoreset pseudo-steps and
    unstable steps excluded).

    Args:
        family: the task family.
        tasks: the tasks (variants), one group of sub-envs each.
        envs_per_task: sub-envs per task (independent episodes of the task).
        transitions_per_env: consecutive real transitions kept per sub-env.
        behaviour: how actions are chosen; uniform random actions by default.
        seed: seeds the env resets and the behaviour's randomness.
        max_envs: the largest number of sub-envs stepped together.
        progress: show a progress bar.

    Returns:
        ``transitions  # [tasks, envs_per_task, transitions_per_env, transition_dim]`` float32,
        each row in time order.
    """
    tasks = list(tasks)
    if not tasks:
        raise ValueError("tasks must hold at least one task")
    for name, value in (("envs_per_task", envs_per_task), ("transitions_per_env", transitions_per_env),
                        ("max_envs", max_envs)):
        check_int(name, value, 1)
    obs_dim, act_dim = env_dims(family)
    dim = transition_dim(obs_dim, act_dim)
    out = np.zeros((len(tasks), envs_per_task, transitions_per_env, dim), dtype=np.float32)
    tasks_per_chunk = max(1, max_envs // envs_per_task)
    seeds = np.random.SeedSequence(seed).spawn(math.ceil(len(tasks) / tasks_per_chunk))
    bar = tqdm(total=len(tasks) * envs_per_task * transitions_per_env, desc=f"collect {family}",
               unit="step", disable=not progress, leave=False)
    for chunk, first in enumerate(range(0, len(tasks), tasks_per_chunk)):
        chunk_tasks = tasks[first : first + tasks_per_chunk]
        rows = _collect_chunk(family, chunk_tasks, envs_per_task, transitions_per_env, behaviour,
                              np.random.default_rng(seeds[chunk]), bar)
        out[first : first + len(chunk_tasks)] = rows.reshape(len(chunk_tasks), envs_per_task,
                                                              transitions_per_env, dim)
    bar.close()
    return out


def _collect_chunk(
    family: str,
    tasks: list[Task],
    envs_per_task: int,
    length: int,
    behaviour: Behaviour | None,
    rng: np.random.Generator,
    bar: tqdm,
) -> np.ndarray:
    """One vector env for ``tasks``; returns ``[len(tasks) * envs_per_task, length, dim]``."""
    num_envs = len(tasks) * envs_per_task
    vector_env = gym.make_vec(envs.env_id(family), num_envs=num_envs,
                              vectorization_mode="vector_entry_point")
    try:
        vector_env.set_tasks([task for task in tasks for _ in range(envs_per_task)])
        if behaviour is None:
            behaviour = UniformRandomBehaviour(vector_env.single_action_space)
        # The behaviours act in the env's units: the env gets their actions clipped to the box.
        action_map = ActionMap.from_space(vector_env.single_action_space, kind="env_units")
        obs_dim, act_dim = space_dims(vector_env.single_observation_space, vector_env.single_action_space)
        reset_seed = int(rng.integers(2**31 - num_envs))
        rows = np.zeros((num_envs, length, transition_dim(obs_dim, act_dim)), dtype=np.float32)
        filled = np.zeros(num_envs, dtype=np.int64)
        # A sub-env with length transitions never needs more than this many steps, unless it
        # terminates every few steps; the bound turns a runaway loop into a clear error.
        max_steps = 50 * length + 1000
        rollout = Rollout(vector_env, lambda t, obs: behaviour(obs, rng), action_map, reset_seed, max_steps,
                          first_episodes_only=False)
        for step in rollout:
            unstable = np.asarray(step.info.get("sim_unstable", np.zeros(num_envs, dtype=bool)), dtype=bool)
            keep = ~step.resetting & ~unstable & (filled < length)
            keep &= np.all(np.isfinite(step.next_observations), axis=1) & np.isfinite(step.rewards)
            index = np.flatnonzero(keep)
            if index.size:
                rows[index, filled[index]] = np.concatenate(
                    [step.observations[index], step.env_actions[index], step.rewards[index, None],
                     step.next_observations[index]], axis=1,
                )
                filled[index] += 1
                bar.update(int(index.size))
            if np.all(filled >= length):
                break
        else:
            raise RuntimeError(
                f"{family}: sub-envs produced only {int(filled.min())} of {length} real transitions "
                f"in {max_steps} steps (episodes end or go unstable almost at once)"
            )
        return rows
    finally:
        vector_env.close()


def collect_contexts(
    family: str,
    tasks: Sequence[Task],
    contexts_per_task: int,
    context_size: int,
    behaviour: Behaviour | None = None,
    seed: int = 0,
    transitions_per_context: int | None = None,
    max_envs: int = 512,
    progress: bool = True,
) -> np.ndarray:
    """Collect contexts for each task, each from its own episode.

    Every context gets its own sub-env, run for ``transitions_per_context``
    real transitions (one episode of the family's horizon by default); the
    context is ``context_size`` of them drawn at random without replacement,
    in random order. Contexts therefore never share a transition or an
    episode, and the first ``c`` transitions of a context are themselves a
    random context of size ``c`` (the evaluation uses these prefixes).

    Args:
        transitions_per_context: length of the episode a context is drawn from; the
            family's horizon by default (at least ``context_size``).
        The other arguments are those of :func:`collect_transitions`.

    Returns:
        ``contexts  # [tasks, contexts_per_task, context_size, transition_dim]`` float32.
    """
    check_context_size(context_size)
    check_int("contexts_per_task", contexts_per_task, 1)
    length = transitions_per_context or max(envs.family_spec(family).horizon, context_size)
    if length < context_size:
        raise ValueError(f"transitions_per_context ({length}) must be >= context_size ({context_size})")
    rng = np.random.default_rng(seed)
    transitions = collect_transitions(family, tasks, contexts_per_task, length, behaviour,
                                      int(rng.integers(2**31)), max_envs, progress)
    # transitions  # [tasks, contexts_per_task, length, dim]
    picks = rng.random(transitions.shape[:3]).argsort(axis=-1)[..., :context_size]  # [tasks, contexts, C]
    return np.take_along_axis(transitions, picks[..., None], axis=2)


def sample_contexts(
    transitions: np.ndarray,
    variants: np.ndarray,
    num_contexts: int,
    context_size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Random contexts from collected trajectories, for training.

    Each context is ``context_size`` transitions drawn without replacement from
    one sub-env trajectory of its variant, and the contexts of a variant come
    from distinct trajectories (the construction of :func:`collect_contexts`:
    otherwise support and query contexts could share an episode, and an
    encoder could learn to match episodes instead of variants).

    Args:
        transitions: ``[variants, envs, length, transition_dim]`` from :func:`collect_transitions`.
        variants: indices into the first axis, ``[n]``.
        num_contexts: contexts per variant (at most ``envs``).
        context_size: transitions per context (at most ``length``).
        rng: the generator that picks trajectories and transitions.

    Returns:
        ``contexts  # [n, num_contexts, context_size, transition_dim]``.
    """
    check_context_size(context_size)
    _, num_envs, length, _ = transitions.shape
    if context_size > length:
        raise ValueError(f"context_size {context_size} exceeds the {length} transitions collected per sub-env")
    if num_contexts > num_envs:
        raise ValueError(
            f"{num_contexts} contexts per variant need as many trajectories per variant, got {num_envs}"
        )
    n = len(variants)
    env = rng.random((n, num_envs)).argsort(axis=-1)[:, :num_contexts]  # [n, contexts], distinct per row
    time = rng.random((n, num_contexts, length)).argsort(axis=-1)[..., :context_size]  # [n, contexts, C]
    return transitions[np.asarray(variants)[:, None, None], env[..., None], time]


def check_context_size(context_size: int) -> int:
    """Raise ``ValueError`` unless ``context_size`` is a positive int."""
    if isinstance(context_size, bool) or not isinstance(context_size, int | np.integer) or context_size < 1:
        raise ValueError(f"context size must be a positive int (transitions per context), got {context_size!r}")
    return int(context_size)
