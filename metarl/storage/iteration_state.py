"""What a sampling trainer (MAML, pretrain) keeps between iterations, and the memory one needs.

:class:`IterationState` is checkpointed with the weights; :func:`check_batch_memory`
refuses a meta-batch that would not fit in the machine's memory.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

import metarl_envs as envs
from metarl.core.rollout import env_dims
from metarl.core.validation import check_memory, step_bytes


@dataclasses.dataclass
class IterationState:
    """What changes between training iterations besides the weights (checkpointed with them).

    Shared by the trainers that sample tasks and episodes (MAML, pretrain);
    each derives its two random streams from the run seed with its own
    stream numbers.
    """

    iteration: int
    task_rng: np.random.Generator
    sampling_generator: torch.Generator
    env_steps: int = 0
    train_seconds: float = 0.0

    @classmethod
    def fresh(cls, seed: int, task_stream: int, sampling_stream: int) -> IterationState:
        """The state before the first iteration of a run with ``seed``."""
        sampling_seed = int(np.random.SeedSequence([seed, sampling_stream]).generate_state(1)[0])
        return cls(
            iteration=0,
            task_rng=np.random.default_rng([seed, task_stream]),
            sampling_generator=torch.Generator().manual_seed(sampling_seed),
        )


ENV_BYTES = 64 * 1024  # one sub-env's simulator state, generously


def check_batch_memory(run_config: Any, allow_large: bool = False, batches: int | None = None) -> None:
    """Refuse a MAML/pretrain meta-batch that would need more than half the machine's memory.

    ``run_config`` is a :class:`metarl.algorithms.presets.MAMLRunConfig`; ``batches`` is how many
    batches of ``meta_batch_size x episodes_per_task`` episodes an iteration keeps
    (default: MAML's ``inner_steps + 1``). Raises ``ValueError`` naming the flags,
    the estimate and ``--allow-large`` (:func:`metarl.core.validation.check_memory`).
    """
    obs_dim, act_dim = env_dims(run_config.family)
    horizon = run_config.horizon if run_config.horizon is not None else envs.family_spec(run_config.family).horizon
    batches = run_config.maml.inner_steps + 1 if batches is None else batches
    episodes = run_config.meta_batch_size * run_config.episodes_per_task
    estimate = (episodes * horizon * batches * step_bytes(obs_dim, act_dim, tuple(run_config.hidden_sizes))
                + episodes * ENV_BYTES)
    check_memory(
        "one meta-batch", estimate,
        f"--meta-batch-size {run_config.meta_batch_size} x --episodes-per-task {run_config.episodes_per_task} x "
        f"--horizon {horizon} x {batches} batches", allow_large,
    )
