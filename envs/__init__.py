"""metarl's task suite: parameterized Gymnasium/MuJoCo task distributions.

The folder is ``envs/``; the import name is ``metarl_envs`` (mapped in pyproject.toml),
so that another package or a user's folder called ``envs`` cannot shadow it.
Importing the package registers one gymnasium id per family, ``MetaRL/<Family>-v0``,
with lazy string entry points, a batched ``vector_entry_point`` and the family's
horizon as ``max_episode_steps`` (``import metarl`` does the same). The Python face
of the suite:

- ``families()`` (and ``FAMILIES``, the same tuple): the registered family names;
- ``distribution(family)``: the family's :class:`TaskDistribution`
  (its ``task_class`` has ``from_dict``);
- ``env_id(family)``: the gymnasium id;
- ``register_family(...)``: add a family of your own (docs/adding-a-family.md);
- ``load_plugins()``: import the modules that register families from outside the
  package (the ``metarl.families`` entry-point group and ``METARL_PLUGINS``).

This package depends on gymnasium, mujoco and numpy only (never torch or metarl).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
from importlib import metadata

import gymnasium as gym

from metarl_envs.gl import check_mujoco_gl
from metarl_envs.tasks import SPLITS, Task, TaskDistribution

# Before any family module imports mujoco: a MUJOCO_GL that cannot work here must not break physics.
check_mujoco_gl(render=False)

PLUGIN_ENTRY_POINT_GROUP = "metarl.families"
PLUGIN_ENVIRONMENT_VARIABLE = "METARL_PLUGINS"
_FAMILY_NAME = re.compile(r"[A-Z][A-Za-z0-9]*")


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    """Where a family lives: ``module`` holds its env, vector env and distribution.

    Attributes:
        module: Importable module name, e.g. ``"mypackage.toy_family"``.
        env_class: Name of the single env class in ``module`` (a ``MetaEnv``).
        vector_env_class: Name of the batched env class in ``module`` (a ``MetaVectorEnv``).
        distribution_class: Name of the ``TaskDistribution`` class in ``module``.
        horizon: Episode length, registered as gymnasium's ``max_episode_steps``.
    """

    module: str
    env_class: str
    vector_env_class: str
    distribution_class: str
    horizon: int

    def __post_init__(self) -> None:
        for field in ("module", "env_class", "vector_env_class", "distribution_class"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise ValueError(f"FamilySpec.{field} must be a non-empty string, got {value!r}")
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int) or self.horizon < 1:
            raise ValueError(f"FamilySpec.horizon must be a positive int, got {self.horizon!r}")


# The registry: family name -> where it lives. A test checks it against gymnasium's.
_REGISTRY: dict[str, FamilySpec] = {
    "Point2DNav": FamilySpec(
        "metarl_envs.point2d", "Point2DNavEnv", "Point2DNavVectorEnv", "Point2DNavDistribution", 100
    ),
    **{
        family: FamilySpec(module, f"{family}Env", f"{family}VectorEnv", f"{family}Distribution", 200)
        for module, family in [
            ("metarl_envs.goal_families", "HalfCheetahVel"),
            ("metarl_envs.goal_families", "HalfCheetahDir"),
            ("metarl_envs.goal_families", "AntDir"),
            ("metarl_envs.goal_families", "AntGoal"),
            ("metarl_envs.dynamics_families", "HalfCheetahRandParams"),
            ("metarl_envs.dynamics_families", "HopperRandParams"),
            ("metarl_envs.dynamics_families", "Walker2dRandParams"),
            ("metarl_envs.dynamics_families", "HalfCheetahCrippled"),
            ("metarl_envs.dynamics_families", "AntCrippled"),
        ]
    },
}


def families() -> tuple[str, ...]:
    """The registered family names: the built-in ones, then any registered since."""
    return tuple(_REGISTRY)


def __getattr__(name: str) -> tuple[str, ...]:
    # FAMILIES follows the registry, so families registered after import show up.
    if name == "FAMILIES":
        return families()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_family(family: str) -> FamilySpec:
    if not isinstance(family, str) or family not in _REGISTRY:
        raise ValueError(
            f"unknown family {family!r}; available families: {', '.join(families())} "
            f"(a family of your own must be registered first: register_family, or "
            f"{PLUGIN_ENVIRONMENT_VARIABLE}=your.module for the command line)"
        )
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
        raise ValueError(f"a task dict needs a 'family' key (one of {', '.join(families())}), got {shown}")
    family = data["family"]
    if not isinstance(family, str) or family not in _REGISTRY:
        shown = repr(family) if len(repr(family)) <= 100 else repr(family)[:100] + "..."
        raise ValueError(f"field 'family' must name a task family, got {shown}; available families: "
                         f"{', '.join(families())}")
    return distribution(family).task_from_dict(data)


def _register_with_gymnasium(family: str, spec: FamilySpec) -> None:
    gym.register(
        id=env_id(family),
        entry_point=f"{spec.module}:{spec.env_class}",
        vector_entry_point=f"{spec.module}:{spec.vector_env_class}",
        max_episode_steps=spec.horizon,
    )


def register_family(
    name: str,
    *,
    module: str,
    env_class: str,
    vector_env_class: str,
    distribution_class: str,
    horizon: int,
) -> str:
    """Add a task family to the suite and register its gymnasium id.

    After this call the family is known everywhere a built-in one is: ``env_id``,
    ``distribution``, ``gym.make`` / ``gym.make_vec``, the trainers, evaluation and
    rendering. Classes are looked up lazily (when an env is made), as gymnasium's
    string entry points are. Registering the same name with the same spec again does
    nothing, so a module that registers at import time can be imported twice.

    Args:
        name: Family name, CamelCase (``[A-Z][A-Za-z0-9]*``); the id is ``MetaRL/<name>-v0``.
        module: Importable module holding the three classes below.
        env_class: Single env (a :class:`metarl_envs.base.MetaEnv` subclass).
        vector_env_class: Batched env (a :class:`metarl_envs.base.MetaVectorEnv` subclass).
        distribution_class: Task distribution (a :class:`TaskDistribution` subclass
            whose ``family`` attribute equals ``name``).
        horizon: Episode length (gymnasium's ``max_episode_steps``).

    Returns:
        The gymnasium id, ``MetaRL/<name>-v0``.

    Raises:
        ValueError: a malformed name or spec, or ``name`` already registered with a
            different spec.
    """
    if not isinstance(name, str) or not _FAMILY_NAME.fullmatch(name):
        raise ValueError(f"family name must match [A-Z][A-Za-z0-9]* (e.g. 'ToyNav'), got {name!r}")
    spec = FamilySpec(module, env_class, vector_env_class, distribution_class, horizon)
    existing = _REGISTRY.get(name)
    if existing is not None:
        if existing == spec:
            return env_id(name)
        raise ValueError(f"family {name!r} is already registered as {existing}; choose another name")
    _REGISTRY[name] = spec
    if env_id(name) in gym.registry:
        del gym.registry[env_id(name)]  # stale id from outside this registry
    _register_with_gymnasium(name, spec)
    return env_id(name)


def load_plugins() -> list[str]:
    """Import the modules that register families of their own.

    Two sources, both read at every call (importing a module twice is harmless):
    the ``metarl.families`` entry-point group of installed distributions (each
    entry point names a module), then the ``METARL_PLUGINS`` environment variable
    (comma-separated module names). The command line calls this at start-up.

    Returns:
        The module names imported, in order.

    Raises:
        ImportError: a named module cannot be imported (the message names its source).
    """
    names: list[tuple[str, str]] = [
        (entry.value.split(":")[0], f"entry point {entry.name!r} of group {PLUGIN_ENTRY_POINT_GROUP!r}")
        for entry in metadata.entry_points(group=PLUGIN_ENTRY_POINT_GROUP)
    ]
    names += [
        (name.strip(), f"{PLUGIN_ENVIRONMENT_VARIABLE}={os.environ[PLUGIN_ENVIRONMENT_VARIABLE]!r}")
        for name in os.environ.get(PLUGIN_ENVIRONMENT_VARIABLE, "").split(",")
        if name.strip()
    ]
    for name, source in names:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ImportError(f"cannot import family module {name!r} (from {source}): {error}") from error
    return [name for name, _ in names]


def _register_builtin() -> None:
    for family, spec in _REGISTRY.items():
        if env_id(family) not in gym.registry:
            _register_with_gymnasium(family, spec)


_register_builtin()

__all__ = ["FAMILIES", "SPLITS", "FamilySpec", "Task", "TaskDistribution", "distribution", "env_id",
           "families", "family_spec", "load_plugins", "register_family", "task_from_dict"]
