"""Which sampler backend a trainer uses: in this process or on Ray actors.

:class:`SamplerChoice` is the trainer's setting (``--sampler``, ``--workers``,
``--ray-address``) and builds the sampler it names: the in-process
:class:`metarl.core.sampler.VectorEnvSampler` or
:class:`metarl.cluster.ray_sampler.RaySampler`. Both return the same episodes; the
choice only decides where they are collected.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from metarl.core.sampler import Sampler, VectorEnvSampler
from metarl.core.validation import check_int

SAMPLER_BACKENDS: tuple[str, ...] = ("local", "ray")


@dataclasses.dataclass(frozen=True)
class SamplerChoice:
    """Which sampler backend a trainer uses; it does not change the episodes (only where they run)."""

    backend: str = "local"
    """local (:class:`VectorEnvSampler` in this process) or ray (:class:`metarl.cluster.ray_sampler.RaySampler`)."""
    workers: int = 1
    """Ray actors, each with a block of the meta-batch's tasks (ray only)."""
    ray_address: str | None = None
    """An existing Ray cluster to connect to (ray only); None starts a local instance on this machine."""

    def __post_init__(self) -> None:
        if self.backend not in SAMPLER_BACKENDS:
            raise ValueError(f"sampler backend must be one of {', '.join(SAMPLER_BACKENDS)}, got {self.backend!r}")
        check_int("workers", self.workers, 1)
        if self.backend == "local" and (self.workers != 1 or self.ray_address is not None):
            raise ValueError("workers and ray_address apply to the ray sampler only; pass --sampler ray")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def build(
        self, family: str, num_tasks: int, device: torch.device | str, seed: int, horizon: int | None
    ) -> Sampler:
        """The sampler for ``num_tasks`` tasks of ``family`` (starts Ray's actors for ``ray``)."""
        if self.backend == "local":
            return VectorEnvSampler(family, num_tasks, device, seed, horizon=horizon)
        from metarl.cluster.ray_sampler import (
            RaySampler,  # Ray is optional: import only when asked for
        )

        return RaySampler(family, num_tasks, self.workers, device, seed, horizon=horizon, address=self.ray_address)

