"""Random padded episodes for algorithm tests (no sampler or env needed)."""

from __future__ import annotations

import torch

from metarl.core.episodes import Episodes


def random_episodes(
    num_tasks: int = 3,
    episodes_per_task: int = 4,
    horizon: int = 6,
    obs_dim: int = 3,
    act_dim: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    early_ends: bool = True,
) -> Episodes:
    """Gaussian observations/actions/rewards; with ``early_ends`` some episodes stop early (padding)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (num_tasks, episodes_per_task, horizon)
    observations = torch.randn(*shape, obs_dim, generator=generator, dtype=dtype)
    actions = torch.randn(*shape, act_dim, generator=generator, dtype=dtype)
    rewards = torch.randn(*shape, generator=generator, dtype=dtype)
    mask = torch.ones(shape, dtype=dtype)
    if early_ends:
        lengths = torch.randint(2, horizon + 1, (num_tasks, episodes_per_task), generator=generator)
        mask = (torch.arange(horizon).reshape(1, 1, horizon) < lengths.unsqueeze(-1)).to(dtype)
    padding = mask.unsqueeze(-1) == 0
    return Episodes(
        observations.masked_fill(padding, 0.0),
        actions.masked_fill(padding, 0.0),
        rewards * mask,
        mask,
        tasks=list(range(num_tasks)),
    )
