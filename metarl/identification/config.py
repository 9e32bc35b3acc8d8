"""ProtoNet hyperparameters: :class:`ProtoNetConfig` and its named presets.

ProtoNet (docs/design.md, "Algorithms") trains a context encoder that identifies a
family's variant from a few transitions: :mod:`metarl.identification.encoder` (the encoder, the
loss, the hand-made statistics), :mod:`metarl.identification.variants` (the variants of a split),
:mod:`metarl.identification.trainer` (episodic training), :mod:`metarl.identification.run` (run
directories), :mod:`metarl.identification.identifier` (the trained run, online),
:mod:`metarl.evaluation.identification` (few-shot accuracy on unseen variants).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import metarl_envs as envs
from metarl.core.validation import check_int, check_ints, check_number, check_optional_int


@dataclasses.dataclass(frozen=True)
class ProtoNetConfig:
    """Hyperparameters of ProtoNet training (everything needed to rebuild a run)."""

    family: str = "Point2DNav"
    """Task family (see ``metarl envs``)."""
    way: int = 5
    """N: variants per training episode."""
    shot: int = 5
    """K: support contexts per variant (their mean embedding is the prototype)."""
    query: int = 5
    """Q: query contexts per variant in a training episode."""
    context_size: int = 16
    """C: transitions per context during training."""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """Widths of the per-transition MLP's ReLU hidden layers."""
    embedding_dim: int = 64
    """Size of the per-transition vectors, of their mean and of the embedding."""
    pooled_hidden_sizes: tuple[int, ...] = (128,)
    """Widths of the ReLU hidden layers of the MLP applied after mean pooling (empty: the
    mean-pooled vector is the embedding)."""
    handmade_features: bool = False
    """Append the standardised hand-made statistics of the context (mean and std of s' - s and of r)
    to the learned embedding: a fixed part that keeps generic dynamics information for variants
    unlike every training one (an actuator never crippled in training), which the learned part,
    trained on the training variants only, may discard."""
    learning_rate: float = 2e-3
    """Adam step size at the start; it decays to 0 along a cosine over ``iterations``."""
    iterations: int = 2000
    """Adam steps."""
    episodes_per_iteration: int = 4
    """Training episodes averaged in one Adam step."""
    train_variants: int = 200
    """Train tasks in the training pool (continuous families; discrete families spread the same
    number of sub-env trajectories over their distinct train tasks)."""
    envs_per_variant: int = 12
    """Episodes (sub-env trajectories) collected per training variant; each context of a training
    episode comes from a different one, so it must be >= shot + query."""
    transitions_per_env: int | None = None
    """Real transitions kept per training sub-env: the length of the episodes contexts are drawn
    from (default: the family's horizon, as in evaluation)."""
    seed: int = 0
    """Seed of everything random in training (tasks, collection, initialisation, episodes)."""

    def __post_init__(self) -> None:
        if self.family not in envs.FAMILIES:
            raise ValueError(f"family must be one of {', '.join(envs.FAMILIES)}, got {self.family!r}")
        for name in ("way", "shot", "query", "context_size", "embedding_dim", "iterations",
                     "episodes_per_iteration", "train_variants", "envs_per_variant"):
            check_int(name, getattr(self, name), 1)
        if self.way < 2:
            raise ValueError(f"way must be >= 2 (identification chooses among variants), got {self.way}")
        if self.envs_per_variant < self.shot + self.query:
            raise ValueError(
                f"envs_per_variant ({self.envs_per_variant}) must be >= shot + query ({self.shot + self.query}): "
                "every context of a variant comes from its own episode"
            )
        check_optional_int("transitions_per_env", self.transitions_per_env, 1)
        if self.context_size > self.episode_length:
            raise ValueError(
                f"context_size ({self.context_size}) must be <= transitions_per_env "
                f"({self.episode_length}): a context is drawn from one sub-env's transitions"
            )
        check_ints("hidden_sizes", self.hidden_sizes, 1, empty=False)
        check_ints("pooled_hidden_sizes", self.pooled_hidden_sizes, 1)
        check_number("learning_rate", self.learning_rate, 0, low_open=True)
        check_int("seed", self.seed, 0)

    @property
    def episode_length(self) -> int:
        """Transitions per training sub-env: ``transitions_per_env`` or the family's horizon."""
        return self.transitions_per_env or envs.family_spec(self.family).horizon

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProtoNetConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown ProtoNetConfig fields {unknown}; known: {sorted(names)}")
        values = dict(data)
        for name in ("hidden_sizes", "pooled_hidden_sizes"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


def preset(name: str, family: str = "Point2DNav") -> ProtoNetConfig:
    """Named configurations: ``tiny`` (tests, seconds) and ``default`` (the README runs)."""
    if name == "tiny":
        return ProtoNetConfig(family=family, hidden_sizes=(64, 64), embedding_dim=32, pooled_hidden_sizes=(64,),
                              iterations=500, episodes_per_iteration=2, train_variants=60, envs_per_variant=10,
                              context_size=16, learning_rate=1e-2)
    if name == "default":
        return ProtoNetConfig(family=family)
    raise ValueError(f"unknown preset {name!r}; available presets: tiny, default")
