"""Base classes for the suite's single and batched environments (docs/design.md, "Task protocol" and "Batched environments and the sampler").

:class:`MetaEnv` adds the task protocol to a gymnasium ``Env``: ``set_task``
(idempotent, takes effect at the next ``reset``), ``get_task`` and
``reset(options={"task": task})``.

:class:`MetaVectorEnv` is the batched vector env: every sub-env holds its own
task, a family implements two batched methods (``_reset_envs`` and
``_step_envs``) and this class does the rest of the gymnasium ``VectorEnv``
contract: per-sub-env seeding that matches the single env (sub-env ``i`` of
``reset(seed=s)`` behaves like the single env reset with ``seed=s + i``), the
time limit, gymnasium's default next-step autoreset, input checks and the
``info`` dict of arrays with ``_name`` masks.
"""

from __future__ import annotations

import math
from abc import ABCMeta, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from metarl_envs.tasks import Task, check_task_type


def check_action(action: Any, shape: tuple[int, ...], what: str = "action") -> np.ndarray:
    """Return ``action`` as a float64 array of ``shape``; raise ``ValueError`` otherwise."""
    try:
        array = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be numeric with shape {shape}: {error}") from None
    if array.shape != shape:
        raise ValueError(f"{what} must have shape {shape}, got {array.shape}")
    # fast path: one dot product is finite for any ordinary action; only otherwise
    # (non-finite, or so large that its square overflows) is each entry checked
    flat = array.ravel()
    with np.errstate(over="ignore"):  # a huge finite action: its square overflows, which is not an error
        square = flat @ flat
    if not math.isfinite(square) and not np.isfinite(array).all():
        raise ValueError(f"{what} must be finite, got {array}")
    return array


class MetaEnv(gym.Env, metaclass=ABCMeta):
    """A gymnasium env whose task can be set (docs/design.md, "Task protocol").

    Subclasses set ``task_class`` and ``default_task`` and read ``self.task``
    (the active task) in ``reset``, after calling :meth:`_begin_reset`.
    """

    task_class: ClassVar[type[Task]]

    def __init__(self, task: Task | None = None) -> None:
        super().__init__()
        if task is not None:
            check_task_type(task, self.task_class)
        self._next_task: Task = task if task is not None else self.default_task()
        self.task: Task = self._next_task

    @classmethod
    @abstractmethod
    def default_task(cls) -> Task:
        """The task used until one is set (the family's nominal task)."""

    def set_task(self, task: Task) -> None:
        """Set the task for the next ``reset``. Setting it twice equals setting it once."""
        check_task_type(task, self.task_class)
        self._next_task = task

    def get_task(self) -> Task:
        """The task most recently set (active from the next reset on)."""
        return self._next_task

    def _begin_reset(self, seed: int | None, options: dict[str, Any] | None) -> None:
        """Seed, apply ``options["task"]`` if given, and activate the pending task."""
        super().reset(seed=seed)
        if options:
            unknown = set(options) - {"task"}
            if unknown:
                raise ValueError(f"unknown reset options {sorted(unknown)}; supported: ['task']")
            self.set_task(options["task"])
        self.task = self._next_task


class MetaVectorEnv(VectorEnv, metaclass=ABCMeta):
    """Batched env: ``num_envs`` sub-envs, each with its own task, stepped together.

    Subclasses implement :meth:`_reset_envs` and :meth:`_step_envs` on index
    arrays and set ``single_observation_space`` / ``single_action_space``
    before calling :meth:`_finish_init`.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}
    task_class: ClassVar[type[Task]]
    default_task: ClassVar[Any]  # the single env class's default_task

    def __init__(self, num_envs: int, max_episode_steps: int | None) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps!r}")
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        nominal = type(self).default_task()
        self._next_tasks: list[Task] = [nominal] * num_envs
        self.tasks: list[Task] = list(self._next_tasks)
        self._rngs: list[np.random.Generator] = [seeding.np_random(None)[0] for _ in range(num_envs)]
        self._elapsed = np.zeros(num_envs, dtype=np.int64)
        self._needs_reset = np.ones(num_envs, dtype=bool)
        self._has_reset = False

    def _finish_init(self) -> None:
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    # -- task protocol ---------------------------------------------------------
    def set_tasks(self, tasks: Sequence[Task]) -> None:
        """One task per sub-env; each takes effect at that sub-env's next reset."""
        tasks = list(tasks)
        if len(tasks) != self.num_envs:
            raise ValueError(f"set_tasks needs {self.num_envs} tasks (one per sub-env), got {len(tasks)}")
        for task in tasks:
            check_task_type(task, self.task_class)
        self._next_tasks = tasks

    def get_tasks(self) -> list[Task]:
        """The tasks most recently set, one per sub-env."""
        return list(self._next_tasks)

    # -- gymnasium VectorEnv ---------------------------------------------------
    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-env. ``seed=s`` seeds sub-env ``i`` with ``s + i``.

        ``options={"tasks": [...]}`` sets the tasks first.
        """
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset needs one seed per sub-env ({self.num_envs}), got {len(seeds)}")
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
        if options:
            unknown = set(options) - {"tasks"}
            if unknown:
                raise ValueError(f"unknown reset options {sorted(unknown)}; supported: ['tasks']")
            self.set_tasks(options["tasks"])
        every = np.arange(self.num_envs)
        obs = self._reset_selected(every)
        self._has_reset = True
        return obs, {}

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._has_reset:
            raise RuntimeError("call reset() before step()")
        shape = (self.num_envs, *self.single_action_space.shape)
        actions = check_action(actions, shape, what="actions")
        resetting = self._needs_reset.copy()
        stepping = np.flatnonzero(~resetting)
        n = self.num_envs
        obs = np.zeros((n, *self.single_observation_space.shape), dtype=np.float64)
        rewards = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        infos: dict[str, Any] = {}
        if stepping.size:
            o, r, term, unstable, terms = self._step_envs(actions[stepping], stepping)
            obs[stepping], rewards[stepping], terminated[stepping] = o, r, term
            self._elapsed[stepping] += 1
            limit = (
                self._elapsed[stepping] >= self.max_episode_steps
                if self.max_episode_steps is not None
                else np.zeros(stepping.size, dtype=bool)
            )
            truncated[stepping] = limit | unstable
            for key, values in {**terms, "sim_unstable": unstable}.items():
                full = np.zeros(n, dtype=np.asarray(values).dtype)
                full[stepping] = values
                mask = np.zeros(n, dtype=bool)
                mask[stepping] = True
                infos[key], infos["_" + key] = full, mask
        if resetting.any():
            obs[resetting] = self._reset_selected(np.flatnonzero(resetting))
        self._needs_reset = terminated | truncated
        return obs.astype(self.single_observation_space.dtype), rewards, terminated, truncated, infos

    def _reset_selected(self, index: np.ndarray) -> np.ndarray:
        for i in index:
            self.tasks[i] = self._next_tasks[i]
        self._elapsed[index] = 0
        self._needs_reset[index] = False
        return self._reset_envs(index)

    # -- to implement by a family ---------------------------------------------
    @abstractmethod
    def _reset_envs(self, index: np.ndarray) -> np.ndarray:
        """Reset sub-envs ``index`` (tasks in ``self.tasks``, noise from ``self._rngs[i]``).

        Returns their observations ``[len(index), obs_dim]``.
        """

    @abstractmethod
    def _step_envs(
        self, actions: np.ndarray, index: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Step sub-envs ``index`` with ``actions  # [len(index), act_dim]``.

        Returns ``(obs, reward, terminated, sim_unstable, reward_terms)``, each
        with leading dimension ``len(index)``; ``reward_terms`` maps info keys
        (``reward_forward``, ...) to arrays.
        """
