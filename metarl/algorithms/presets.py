"""Named MAML run configurations (``--preset tiny|fast|paper``), as plain functions.

:class:`MAMLRunConfig` is everything a MAML run needs besides the seed and the
device: the family, how many meta-iterations, the meta-batch (tasks x
episodes x horizon), the policy architecture and the algorithm's
:class:`~metarl.algorithms.maml.config.MAMLConfig`. The presets are data:
:data:`MAML_PRESETS` maps preset name x family group (a family's name, or ``"*"``
for every other family) to the fields that differ from :class:`MAMLRunConfig`'s
defaults; :func:`maml_preset` builds one per preset and family; tests, the CLI
and the demo all call it.

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
from typing import Annotated, Any

import torch

import metarl_envs as envs
from metarl.algorithms.maml.config import MAMLConfig
from metarl.core.flags import choice
from metarl.core.policy import (
    DEFAULT_NONLINEARITY,
    DEFAULT_WEIGHT_INIT,
    NONLINEARITIES,
    WEIGHT_INITS,
    GaussianMLPPolicy,
    check_nonlinearity,
    check_weight_init,
)
from metarl.core.rollout import env_dims
from metarl.core.validation import check_int, check_number

OTHER_FAMILIES = "*"
"""The family group of :data:`MAML_PRESETS` that holds every family not named in a preset's row."""


@dataclasses.dataclass(frozen=True)
class MAMLRunConfig:
    """A MAML run: what to sample, for how long, with which policy and algorithm."""

    family: str
    """Task family (one of envs.FAMILIES)."""
    iterations: int
    """Meta-iterations in total (with --resume: extend the run to this many)."""
    meta_batch_size: int
    """Tasks per meta-batch."""
    episodes_per_task: int
    """Episodes per task for each inner step and for the query."""
    horizon: int | None = None
    """Episode length."""
    hidden_sizes: tuple[int, ...] = (100, 100)
    """Widths of the policy's hidden layers, e.g. --hidden-sizes 100 100."""
    init_std: float = 1.0
    """Initial standard deviation of the Gaussian policy."""
    nonlinearity: Annotated[str, choice(NONLINEARITIES)] = DEFAULT_NONLINEARITY
    """The policy's hidden-layer nonlinearity: tanh, or relu (the MAML paper's code)."""
    weight_init: Annotated[str, choice(WEIGHT_INITS)] = DEFAULT_WEIGHT_INIT
    """The policy's initialisation: pytorch (nn.Linear's default), xavier (Xavier-uniform weights,
    zero biases, as rllab's MAML policies) or xavier_small_out (xavier with the output weights x 0.01:
    the initial mean is near 0 everywhere)."""
    checkpoint_every: int = 10
    """Save a checkpoint every this many iterations (and at the end)."""
    maml: MAMLConfig = dataclasses.field(default_factory=MAMLConfig)
    """The algorithm's hyperparameters."""

    def __post_init__(self) -> None:
        envs.family_spec(self.family)  # ValueError listing the families
        check_int("iterations", self.iterations, 1)
        check_int("meta_batch_size (tasks per meta-batch)", self.meta_batch_size, 1)
        check_int("episodes_per_task", self.episodes_per_task, 1)
        check_int("checkpoint_every", self.checkpoint_every, 1)
        if self.horizon is not None:
            check_int("horizon", self.horizon, 1)
        if not self.hidden_sizes:
            raise ValueError(f"hidden_sizes must be one or more positive integers, got {self.hidden_sizes!r}")
        for size in self.hidden_sizes:
            check_int("hidden_sizes (each width)", size, 1)
        check_number("init_std", self.init_std, 0, low_open=True)
        check_nonlinearity(self.nonlinearity)
        check_weight_init(self.weight_init)
        if not isinstance(self.maml, MAMLConfig):
            raise ValueError(f"maml must be a MAMLConfig, got {type(self.maml).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``from_dict`` inverts it); ``maml`` is the flat block of ``config.json``."""
        out = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        out["hidden_sizes"] = list(self.hidden_sizes)
        out["maml"] = self.maml.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MAMLRunConfig:
        """Rebuild from :meth:`to_dict` output (validates)."""
        data = dict(data)
        data["hidden_sizes"] = tuple(data["hidden_sizes"])
        data["maml"] = MAMLConfig.from_dict(data["maml"])
        return cls(**data)

    def replace(self, **changes: Any) -> MAMLRunConfig:
        """A copy with some fields (or ``maml`` flat keys, passed as ``maml={...}``) changed."""
        maml_changes = changes.pop("maml", None) or {}
        maml = self.maml.replace(**maml_changes) if maml_changes else self.maml
        return dataclasses.replace(self, maml=maml, **changes)


MAML_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # preset -> family group -> the fields that differ from MAMLRunConfig's defaults
    # ("maml": flat MAMLConfig keys); see the module docstring for where each number comes from
    "tiny": {
        "Point2DNav": {
            "iterations": 15, "meta_batch_size": 10, "episodes_per_task": 10, "hidden_sizes": (32, 32),
            "checkpoint_every": 5, "maml": {"inner_lr": 0.1, "outer": "trpo", "max_kl": 0.01},
        },
        OTHER_FAMILIES: {
            "iterations": 3, "meta_batch_size": 4, "episodes_per_task": 4, "hidden_sizes": (32, 32), "horizon": 50,
            "checkpoint_every": 1, "maml": {"inner_lr": 0.1, "outer": "trpo", "max_kl": 0.01},
        },
    },
    "fast": {
        "Point2DNav": {
            "iterations": 40, "meta_batch_size": 20, "episodes_per_task": 20, "hidden_sizes": (100, 100),
            "checkpoint_every": 5, "maml": {"inner_lr": 0.1, "outer": "trpo", "max_kl": 0.01},
        },
        OTHER_FAMILIES: {
            "iterations": 50, "meta_batch_size": 20, "episodes_per_task": 10, "hidden_sizes": (100, 100),
            "checkpoint_every": 5, "maml": {"inner_lr": 0.1, "outer": "trpo", "max_kl": 0.01},
        },
    },
    "paper": {
        "Point2DNav": {
            "iterations": 100, "meta_batch_size": 20, "episodes_per_task": 20, "hidden_sizes": (100, 100),
            "nonlinearity": "relu", "weight_init": "xavier",
            "maml": {"inner_lr": 0.5, "outer": "trpo", "max_kl": 0.01},
        },
        "HalfCheetahDir": {  # maml1_fbs20_mbs40_flr_0.1_mlr0.02/itr_100
            "iterations": 100, "meta_batch_size": 40, "episodes_per_task": 20, "hidden_sizes": (100, 100),
            "nonlinearity": "relu", "maml": {"inner_lr": 0.1, "outer": "trpo", "max_kl": 0.02},
        },
        "HalfCheetahVel": {  # maml1_fbs10_mbs40_flr_0.1_mlr0.01/itr_475
            "iterations": 475, "meta_batch_size": 40, "episodes_per_task": 10, "hidden_sizes": (100, 100),
            "nonlinearity": "relu", "maml": {"inner_lr": 0.1, "outer": "trpo", "max_kl": 0.01},
        },
        OTHER_FAMILIES: {
            "iterations": 200, "meta_batch_size": 40, "episodes_per_task": 20, "hidden_sizes": (100, 100),
            "maml": {"inner_lr": 0.1, "outer": "trpo", "max_kl": 0.01},
        },
    },
}
"""Preset name -> family group (a family's name, or :data:`OTHER_FAMILIES`) -> fields."""
PRESETS: tuple[str, ...] = tuple(MAML_PRESETS)


def maml_preset(name: str, family: str) -> MAMLRunConfig:
    """The ``name`` preset (tiny, fast or paper) for ``family``: its row of :data:`MAML_PRESETS`."""
    envs.family_spec(family)
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available presets: {', '.join(PRESETS)}")
    rows = MAML_PRESETS[name]
    fields = dict(rows.get(family, rows[OTHER_FAMILIES]))
    maml = MAMLConfig.flat(**fields.pop("maml", {}))
    return MAMLRunConfig(family, maml=maml, **fields)


def initial_policy(run_config: MAMLRunConfig, seed: int) -> GaussianMLPPolicy:
    """The policy of a run initialised from ``seed`` (the caller's global torch RNG is left untouched)."""
    obs_dim, act_dim = env_dims(run_config.family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GaussianMLPPolicy(obs_dim, act_dim, run_config.hidden_sizes, run_config.init_std,
                                 run_config.nonlinearity, run_config.weight_init)
