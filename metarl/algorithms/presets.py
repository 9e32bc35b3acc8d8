"""Named MAML run configurations (``--preset tiny|fast|paper``), as plain functions.

:class:`MAMLRunConfig` is everything a MAML run needs besides the seed and the
device: the family, how many meta-iterations, the meta-batch (tasks x
episodes x horizon), the policy architecture and the algorithm's
:class:`~metarl.algorithms.maml.learner.MAMLConfig`. :func:`maml_preset` builds one per preset and
family; tests, the CLI and the demo all call it.

- ``paper``: the MAML paper's configurations (Finn et al. 2017, §5.3 and code
  cbfinn/maml_rl). Point2DNav: the paper code's point script
  (``maml_examples/maml_trpo_point.py``, snapshot
  ``trpomaml1_fbs20_mbs20_flr_0.5metalr_0.01_step11``): 20 tasks x 20
  episodes, horizon 100, inner lr 0.5 (the paper's text says 0.1), 100
  iterations, hidden (100, 100) ReLU initialised as rllab's policies
  (Xavier-uniform weights, zero biases: with PyTorch's default biases one
  seed in three started drifting off and never learned, and lr 0.5
  overshot at the evaluation's second step), TRPO with max KL 0.01.
  HalfCheetahDir and HalfCheetahVel: the snapshots the paper's figures were
  made from (``maml_examples/test_maml_cheetah*.py`` name them), ReLU hidden
  layers (100, 100) as in those scripts, 40 tasks,
  horizon 200, inner lr 0.1; Dir: 20 episodes per task, max KL 0.02,
  iteration 100 (``maml1_fbs20_mbs40_flr_0.1_mlr0.02/itr_100``); Vel: 10
  episodes per task, max KL 0.01, iteration 475
  (``maml1_fbs10_mbs40_flr_0.1_mlr0.01/itr_475``). The other locomotion
  families use 40 tasks x 20 episodes, tanh, max KL 0.01, 200 iterations
  (not in the paper).
- ``fast``: minutes on a 2-core CPU. Point2DNav: the paper's batch, 40
  iterations; locomotion: 20 tasks x 10 episodes, 50 iterations.
- ``tiny``: CI-sized, seconds. Point2DNav: 10 tasks x 10 episodes, hidden
  (32, 32), 15 iterations; locomotion: 4 tasks x 4 episodes, horizon 50,
  hidden (32, 32), 3 iterations.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import metarl_envs as envs
from metarl.algorithms.maml.learner import MAMLConfig
from metarl.core.policy import (
    DEFAULT_NONLINEARITY,
    DEFAULT_WEIGHT_INIT,
    check_nonlinearity,
    check_weight_init,
)
from metarl.core.validation import check_number

PRESETS: tuple[str, ...] = ("tiny", "fast", "paper")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclasses.dataclass(frozen=True)
class MAMLRunConfig:
    """A MAML run: what to sample, for how long, with which policy and algorithm."""

    family: str
    """Task family (one of envs.FAMILIES)."""
    iterations: int
    """Meta-iterations (one meta-batch and one outer update each)."""
    meta_batch_size: int
    """Tasks per meta-batch."""
    episodes_per_task: int
    """Episodes per task for each inner step (support) and for the query."""
    hidden_sizes: tuple[int, ...] = (100, 100)
    """Widths of the policy's hidden layers."""
    init_std: float = 1.0
    """Initial standard deviation of the Gaussian policy."""
    nonlinearity: str = DEFAULT_NONLINEARITY
    """The policy's hidden-layer nonlinearity: tanh or relu."""
    weight_init: str = DEFAULT_WEIGHT_INIT
    """The policy's initialisation: pytorch (nn.Linear's default), xavier (zero biases, as rllab) or
    xavier_small_out (xavier with the output weights x 0.01)."""
    horizon: int | None = None
    """Episode length; None uses the family's registered horizon."""
    checkpoint_every: int = 10
    """Save a checkpoint every this many iterations (and at the end)."""
    maml: MAMLConfig = dataclasses.field(default_factory=MAMLConfig)
    """The algorithm's hyperparameters."""

    def __post_init__(self) -> None:
        envs.family_spec(self.family)  # ValueError listing the families
        _positive_int("iterations", self.iterations)
        _positive_int("meta_batch_size (tasks per meta-batch)", self.meta_batch_size)
        _positive_int("episodes_per_task", self.episodes_per_task)
        _positive_int("checkpoint_every", self.checkpoint_every)
        if self.horizon is not None:
            _positive_int("horizon", self.horizon)
        if not self.hidden_sizes or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be one or more positive integers, got {self.hidden_sizes!r}")
        check_number("init_std", self.init_std, 0, low_open=True)
        check_nonlinearity(self.nonlinearity)
        check_weight_init(self.weight_init)
        if not isinstance(self.maml, MAMLConfig):
            raise ValueError(f"maml must be a MAMLConfig, got {type(self.maml).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``from_dict`` inverts it)."""
        out = dataclasses.asdict(self)
        out["hidden_sizes"] = list(self.hidden_sizes)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MAMLRunConfig:
        """Rebuild from :meth:`to_dict` output (validates)."""
        data = dict(data)
        data["hidden_sizes"] = tuple(data["hidden_sizes"])
        data["maml"] = MAMLConfig(**data["maml"])
        return cls(**data)

    def replace(self, **changes: Any) -> MAMLRunConfig:
        """A copy with some fields (or ``maml`` fields, passed as ``maml={...}``) changed."""
        maml_changes = changes.pop("maml", None) or {}
        maml = dataclasses.replace(self.maml, **maml_changes) if maml_changes else self.maml
        return dataclasses.replace(self, maml=maml, **changes)


_CHEETAH_PAPER = {  # the paper code's ICML snapshots: iterations, episodes per task, max KL
    "HalfCheetahDir": (100, 20, 0.02),
    "HalfCheetahVel": (475, 10, 0.01),
}


def maml_preset(name: str, family: str) -> MAMLRunConfig:
    """The ``name`` preset (tiny, fast or paper) for ``family``."""
    envs.family_spec(family)
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available presets: {', '.join(PRESETS)}")
    point = family == "Point2DNav"
    if name == "paper":
        if point:
            return MAMLRunConfig(
                family, iterations=100, meta_batch_size=20, episodes_per_task=20, hidden_sizes=(100, 100),
                nonlinearity="relu", weight_init="xavier", maml=MAMLConfig(inner_lr=0.5, outer="trpo", max_kl=0.01),
            )
        if family in _CHEETAH_PAPER:
            iterations, episodes, max_kl = _CHEETAH_PAPER[family]
            return MAMLRunConfig(
                family, iterations=iterations, meta_batch_size=40, episodes_per_task=episodes,
                hidden_sizes=(100, 100), nonlinearity="relu",
                maml=MAMLConfig(inner_lr=0.1, outer="trpo", max_kl=max_kl),
            )
        return MAMLRunConfig(
            family, iterations=200, meta_batch_size=40, episodes_per_task=20, hidden_sizes=(100, 100),
            maml=MAMLConfig(inner_lr=0.1, outer="trpo", max_kl=0.01),
        )
    if name == "fast":
        if point:
            return MAMLRunConfig(
                family, iterations=40, meta_batch_size=20, episodes_per_task=20, hidden_sizes=(100, 100),
                checkpoint_every=5, maml=MAMLConfig(inner_lr=0.1, outer="trpo", max_kl=0.01),
            )
        return MAMLRunConfig(
            family, iterations=50, meta_batch_size=20, episodes_per_task=10, hidden_sizes=(100, 100),
            checkpoint_every=5, maml=MAMLConfig(inner_lr=0.1, outer="trpo", max_kl=0.01),
        )
    if point:
        return MAMLRunConfig(
            family, iterations=15, meta_batch_size=10, episodes_per_task=10, hidden_sizes=(32, 32),
            checkpoint_every=5, maml=MAMLConfig(inner_lr=0.1, outer="trpo", max_kl=0.01),
        )
    return MAMLRunConfig(
        family, iterations=3, meta_batch_size=4, episodes_per_task=4, hidden_sizes=(32, 32), horizon=50,
        checkpoint_every=1, maml=MAMLConfig(inner_lr=0.1, outer="trpo", max_kl=0.01),
    )
