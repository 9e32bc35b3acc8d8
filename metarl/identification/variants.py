"""The variants a ProtoNet training or evaluation draws from.

*Variants* (metarl.identification.contexts): for continuous families every sampled task is a
variant, and training draws ``way`` distinct tasks from a pool of
``train_variants`` train tasks (collected once, uniform random behaviour by
default); for discrete families (HalfCheetahCrippled) the variants are the
distinct tasks the split can produce, and a ``way`` larger than their number
is an error.
"""

from __future__ import annotations

import dataclasses

import numpy as np

import metarl_envs as envs
from metarl.identification.contexts import distinct_variants
from metarl_envs.tasks import Task


@dataclasses.dataclass(frozen=True)
class VariantPool:
    """The variants an evaluation or training draws from.

    ``tasks`` are the variants; ``required`` the indices every episode must
    contain (the novel variants of a discrete family's ood split).
    """

    tasks: tuple[Task, ...]
    discrete: bool
    required: tuple[int, ...] = ()


def variant_pool(family: str, split: str, count: int, rng: np.random.Generator) -> VariantPool:
    """The variants of ``split``: its distinct tasks (discrete) or ``count`` sampled tasks.

    For a discrete family's ood split the pool is the novel ood variants
    followed by the training variants, with the novel ones required.
    """
    distinct = distinct_variants(family, split)
    if distinct is None:
        return VariantPool(tuple(envs.distribution(family).sample(count, split, rng)), discrete=False)
    if split != "ood":
        return VariantPool(tuple(distinct), discrete=True)
    train = distinct_variants(family, "train") or []
    novel = [t for t in distinct if t.task_id not in {u.task_id for u in train}]
    return VariantPool(tuple(novel + list(train)), discrete=True, required=tuple(range(len(novel))))


def check_way(way: int, pool: VariantPool, split: str, family: str, training: bool = True) -> None:
    """Raise a clear ``ValueError`` when ``way`` exceeds the variants the split can produce.

    The advice fits the command: ``--way`` of ``metarl train protonet`` while training; at
    evaluation (``training=False``, where ``way`` is the run's) another split or run.
    """
    if way > len(pool.tasks):
        kind = "distinct variants" if pool.discrete else "variants in the pool"
        raise ValueError(
            f"way={way} is larger than the {len(pool.tasks)} {kind} that the {split} split of {family} "
            f"can produce ({[t.to_dict() for t in pool.tasks] if pool.discrete else 'sampled tasks'}); "
            + (f"use --way {len(pool.tasks)} or less" if training else
               f"evaluate on another split, or on a run trained with `metarl train protonet --way "
               f"{len(pool.tasks)}` or less")
        )
