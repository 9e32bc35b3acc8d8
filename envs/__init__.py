"""metarl's task suite: parameterized Gymnasium/MuJoCo task distributions.

``import envs`` registers one gymnasium id per family, ``MetaRL/<Family>-v0``,
with lazy string entry points, a batched ``vector_entry_point`` and the
family's horizon as ``max_episode_steps``. The Python face of the suite:

- ``envs.FAMILIES``: the family names;
- ``envs.distribution(family)``: the family's :class:`~envs.tasks.TaskDistribution`
  (its ``task_class`` has ``from_dict``);
- ``envs.env_id(family)``: the gymnasium id.

This package depends on gymnasium, mujoco and numpy only (never torch or metarl).
"""

from __future__ import annotations

import dataclasses
import importlib

import gymnasium as gym

from envs.gl import check_mujoco_gl
from envs.tasks import SPLITS, Task, TaskDistribution

# Before any family module imports mujoco: a MUJOCO_GL that cannot work here must not break physics.
check_mujoco_gl(render=False)


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    """Where a family lives: ``module`` holds its env, vector env and distribution."""

    module: str
    env_class: str
    vector_env_class: str
    distribution_class: str
    horizon: int


# The registry: family name -> where it lives. A test checks it against gymnasium's.
_REGISTRY: dict[str, FamilySpec] = {
    "Point2DNav": FamilySpec(
        "envs.point2d", "Point2DNavEnv", "Point2DNavVectorEnv", "Point2DNavDistribution", 100
    ),
    **{
        family: FamilySpec(module, f"{family}Env", f"{family}VectorEnv", f"{family}Distribution", 200)
        for module, family in [
            ("envs.goal_families", "HalfCheetahVel"),
            ("envs.goal_families", "HalfCheetahDir"),
            ("envs.goal_families", "AntDir"),
            ("envs.goal_families", "AntGoal"),
            ("envs.dynamics_families", "HalfCheetahRandParams"),
            ("envs.dynamics_families", "HopperRandParams"),
            ("envs.dynamics_families", "Walker2dRandParams"),
            ("envs.dynamics_families", "HalfCheetahCrippled"),
            ("envs.dynamics_families", "AntCrippled"),
        ]
    },
}

FAMILIES: tuple[str, ...] = tuple(_REGISTRY)


def _check_family(family: str) -> FamilySpec:
    if not isinstance(family, str) or family not in _REGISTRY:
        raise ValueError(f"unknown family {family!r}; available families: {', '.join(FAMILIES)}")
    return _REGISTRY[family]


def family_spec(family: str) -> FamilySpec:
    """The registry entry of ``family`` (raises ``ValueError`` listing the families)."""
    return _check_family(family)


def env_id(family: str) -> str:
    """The gymnasium id of ``family``: ``MetaRL/<family>-v0``."""
    _check_family(family)
    return f"MetaRL/{family}-v0"


def distribution(family: str) -> TaskDistribution:
    """The task distribution of ``family``."""
    spec = _check_family(family)
    module = importlib.import_module(spec.module)
    return getattr(module, spec.distribution_class)()


def task_from_dict(data: dict) -> Task:
    """Rebuild a task of any family from ``task.to_dict()`` output."""
    if not isinstance(data, dict) or "family" not in data:
        shown = repr(data) if len(repr(data)) <= 200 else repr(data)[:200] + "..."
        raise ValueError(f"a task dict needs a 'family' key (one of {', '.join(FAMILIES)}), got {shown}")
    family = data["family"]
    if not isinstance(family, str) or family not in _REGISTRY:
        shown = repr(family) if len(repr(family)) <= 100 else repr(family)[:100] + "..."
        raise ValueError(f"field 'family' must name a task family, got {shown}; available families: "
                         f"{', '.join(FAMILIES)}")
    return distribution(family).task_from_dict(data)


def _register() -> None:
    for family, spec in _REGISTRY.items():
        name = env_id(family)
        if name in gym.registry:
            continue
        gym.register(
            id=name,
            entry_point=f"{spec.module}:{spec.env_class}",
            vector_entry_point=f"{spec.module}:{spec.vector_env_class}",
            max_episode_steps=spec.horizon,
        )


_register()

__all__ = ["FAMILIES", "SPLITS", "FamilySpec", "Task", "TaskDistribution", "distribution", "env_id",
           "family_spec", "task_from_dict"]
