"""The batch of episodes that the sampler returns and the algorithms consume.

Episodes of a meta-batch are stored as padded tensors with a leading task
dimension, so that every task's adaptation runs as one batched operation:

- ``observations  # [tasks, episodes, time, obs_dim]``
- ``actions       # [tasks, episodes, time, act_dim]``
- ``rewards       # [tasks, episodes, time]``
- ``mask          # [tasks, episodes, time]``: 1.0 on steps that were taken
  (up to and including the terminal step), 0.0 on padding after an episode
  ended early. ``time`` is the horizon.

Padding steps hold zeros; every loss must weight per-step terms by ``mask``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch


@dataclasses.dataclass
class Episodes:
    """Padded episodes of several tasks (see the module docstring for shapes)."""

    observations: torch.Tensor  # [tasks, episodes, time, obs_dim]
    actions: torch.Tensor  # [tasks, episodes, time, act_dim]
    rewards: torch.Tensor  # [tasks, episodes, time]
    mask: torch.Tensor  # [tasks, episodes, time]
    tasks: Sequence[Any] = ()
    """The task of each row (opaque to algorithms)."""

    def __post_init__(self) -> None:
        t, e, h = self.rewards.shape
        for name in ("observations", "actions"):
            shape = getattr(self, name).shape
            if tuple(shape[:3]) != (t, e, h):
                raise ValueError(f"Episodes.{name} has shape {tuple(shape)}, expected [{t}, {e}, {h}, dim]")
        if tuple(self.mask.shape) != (t, e, h):
            raise ValueError(f"Episodes.mask has shape {tuple(self.mask.shape)}, expected [{t}, {e}, {h}]")

    @property
    def num_tasks(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def episodes_per_task(self) -> int:
        return int(self.rewards.shape[1])

    @property
    def horizon(self) -> int:
        return int(self.rewards.shape[2])

    @property
    def returns(self) -> torch.Tensor:
        """Undiscounted return of each episode  # [tasks, episodes]."""
        return (self.rewards * self.mask).sum(dim=-1)

    @property
    def num_steps(self) -> int:
        """Environment steps actually taken (padding excluded)."""
        return int(self.mask.sum().item())

    def to(self, device: torch.device | str) -> Episodes:
        """The same episodes on ``device``."""
        return dataclasses.replace(
            self,
            observations=self.observations.to(device),
            actions=self.actions.to(device),
            rewards=self.rewards.to(device),
            mask=self.mask.to(device),
        )

    def task_slice(self, index: int | slice) -> Episodes:
        """The episodes of some tasks, keeping the task dimension."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Episodes(
            self.observations[index],
            self.actions[index],
            self.rewards[index],
            self.mask[index],
            list(self.tasks)[index] if self.tasks else (),
        )
