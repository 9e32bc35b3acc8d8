"""The stable-baselines3 algorithms the fine-tune baseline supports, by ``--algo`` name."""

from __future__ import annotations

from stable_baselines3.common.base_class import BaseAlgorithm

from metarl.algorithms.finetune import ppo, sac
from metarl.algorithms.finetune.adapter import SB3Adapter

ADAPTERS: dict[str, SB3Adapter] = {a.name: a for a in (ppo.ADAPTER, sac.ADAPTER)}
ALGOS: tuple[str, ...] = tuple(ADAPTERS)


def adapter(algo: str) -> SB3Adapter:
    """The adapter of ``algo`` (``ValueError`` naming the allowed values otherwise)."""
    if algo not in ADAPTERS:
        raise ValueError(f"algo must be one of {list(ALGOS)}, got {algo!r}")
    return ADAPTERS[algo]


def adapter_of(model: BaseAlgorithm) -> SB3Adapter:
    """The adapter of a built SB3 model."""
    for candidate in ADAPTERS.values():
        if isinstance(model, candidate.sb3_class):
            return candidate
    names = ", ".join(a.sb3_class.__name__ for a in ADAPTERS.values())
    raise ValueError(f"unsupported model type {type(model).__name__}; supported: {names}")
