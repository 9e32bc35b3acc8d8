"""The fine-tune baseline's configuration: the model description, the fine-tuning recipe, the run config."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

import metarl_envs as envs
from metarl.algorithms.finetune.registry import ALGOS, adapter
from metarl.core.rollout import env_dims
from metarl.core.validation import check_int, check_number

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
METHOD = "finetune"
WEIGHTS_FILE = "policy.safetensors"
SPEC_FORMAT = "metarl-finetune-sb3/1"
_OBS_MEAN, _OBS_VAR = "obs_rms.mean", "obs_rms.var"
_SEED_LIMIT = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the SB3 model (the JSON beside the weights).

    ``hyperparameters`` are the keyword arguments of the SB3 algorithm
    (``PPO(...)`` / ``SAC(...)``), JSON values only.
    """

    algo: str
    family: str
    obs_dim: int
    act_dim: int
    hidden_sizes: tuple[int, ...]
    activation: str
    log_std_init: float
    normalize_obs: bool
    obs_clip: float = 10.0
    obs_epsilon: float = 1e-8
    obs_count: float = 0.0
    hyperparameters: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {list(ALGOS)}, got {self.algo!r}")
        envs.family_spec(self.family)
        if self.obs_dim < 1 or self.act_dim < 1:
            raise ValueError(f"obs_dim and act_dim must be >= 1, got {self.obs_dim}, {self.act_dim}")
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        if not self.hidden_sizes or any(h < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be one or more positive widths, got {self.hidden_sizes}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {self.activation!r}")

    @property
    def num_layers(self) -> int:
        """Linear layers of the policy network: the hidden layers and the action head."""
        return len(self.hidden_sizes) + 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, tagged with the file format."""
        return {"format": SPEC_FORMAT, **dataclasses.asdict(self), "hidden_sizes": list(self.hidden_sizes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Rebuild from :meth:`to_dict` output; errors name what is wrong."""
        if not isinstance(data, dict) or data.get("format") != SPEC_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"not a fine-tune model description: format is {found!r}, expected {SPEC_FORMAT!r}")
        data = {k: v for k, v in data.items() if k != "format"}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = sorted(set(data) - names), sorted(
            f.name for f in dataclasses.fields(cls)
            if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        if unknown or missing:
            raise ValueError(f"model description: unknown fields {unknown}, missing fields {missing}")
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class FinetuneRecipe:
    """How a pretrained model is fine-tuned on one task, and with what budget."""

    freeze: int = 0
    """Number of lowest policy layers (hidden layers, then the head) kept frozen."""
    new_head: bool = False
    """Replace the action head with a freshly initialised layer (keeps the body)."""
    learning_rate: float = 3e-4
    """Adam learning rate while fine-tuning."""
    ppo_epochs: int = 10
    """PPO: passes over each budget chunk per update."""
    ppo_minibatches: int = 4
    """PPO: minibatches per pass over a budget chunk."""
    episodes_per_step: int = 20
    """Episodes per budget chunk (MAML's episodes per adaptation step)."""
    num_steps: int = 3
    """Budget chunks (MAML's adaptation steps); returns are reported for k = 0..num_steps."""

    def __post_init__(self) -> None:
        check_int("freeze", self.freeze, 0)
        for name in ("ppo_epochs", "ppo_minibatches", "episodes_per_step", "num_steps"):
            check_int(name, getattr(self, name), 1)
        check_number("learning_rate (fine-tuning, --finetune-lr)", self.learning_rate, 0, low_open=True)

    def check_against(self, spec: ModelSpec) -> None:
        """Raise ``ValueError`` if this recipe cannot apply to ``spec``'s network."""
        if self.freeze > spec.num_layers:
            raise ValueError(
                f"freeze={self.freeze} asks for more layers than the policy network has: it has "
                f"{spec.num_layers} ({len(spec.hidden_sizes)} hidden {list(spec.hidden_sizes)} + the action "
                f"head); use freeze in 0..{spec.num_layers}"
            )
        if self.new_head and self.freeze > len(spec.hidden_sizes):
            raise ValueError(
                f"freeze={self.freeze} with new_head would freeze the fresh head; with new_head use "
                f"freeze in 0..{len(spec.hidden_sizes)} (the hidden layers)"
            )


def default_hyperparameters(algo: str) -> dict[str, Any]:
    """SB3 keyword arguments used for pretraining (SB3's defaults, with a smaller SAC buffer)."""
    return adapter(algo).default_hyperparameters()


def steps_per_round(algo: str, hyperparameters: dict[str, Any], num_envs: int) -> int:
    """Environment steps of one collection round of stable-baselines3's ``learn``.

    ``learn`` stops only between rounds, so it trains a whole number of them: a
    PPO rollout is ``n_steps`` steps in each of the ``num_envs`` envs; a SAC round
    is ``train_freq`` steps (an int: steps, not episodes) of every env.
    """
    return adapter(algo).steps_per_round(hyperparameters, num_envs)


def make_spec(
    family: str,
    algo: str,
    hidden_sizes: tuple[int, ...] = (100, 100),
    normalize_obs: bool = True,
    hyperparameters: dict[str, Any] | None = None,
) -> ModelSpec:
    """The description of a new model for ``family`` (sizes from :func:`metarl.core.rollout.env_dims`)."""
    obs_dim, act_dim = env_dims(family)
    hyper = default_hyperparameters(algo)
    hyper.update(hyperparameters or {})
    return ModelSpec(
        algo=algo, family=family, obs_dim=obs_dim, act_dim=act_dim, hidden_sizes=tuple(hidden_sizes),
        activation=adapter(algo).activation, log_std_init=adapter(algo).log_std_init,
        normalize_obs=normalize_obs, hyperparameters=hyper,
    )


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tune baseline run: pretraining settings and the fine-tuning recipe."""

    family: str
    """Task family (``envs.FAMILIES``)."""
    algo: str = "ppo"
    """stable-baselines3 algorithm: ppo or sac."""
    timesteps: int = 200_000
    """Pretraining environment steps on the train-task mixture, rounded up to whole collection rounds
    (:attr:`pretrain_steps`)."""
    seed: int = 0
    """Run seed; every generator of the run derives from it."""
    num_envs: int = 8
    """Parallel envs while pretraining (each draws its own tasks)."""
    hidden_sizes: tuple[int, ...] = (100, 100)
    """Hidden layer widths of the policy (and of the critic)."""
    normalize_obs: bool = True
    """Normalise observations with running statistics learnt while pretraining."""
    learning_rate: float = 3e-4
    """Adam learning rate while pretraining."""
    recipe: FinetuneRecipe = dataclasses.field(default_factory=FinetuneRecipe)
    """How evaluation fine-tunes the pretrained model on each task."""

    def __post_init__(self) -> None:
        envs.family_spec(self.family)
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {list(ALGOS)}, got {self.algo!r}")
        for name in ("timesteps", "num_envs"):
            check_int(name, getattr(self, name), 1)
        check_int("seed", self.seed, 0)
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        if not self.hidden_sizes or any(h < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be one or more positive widths, got {self.hidden_sizes}")
        check_number("learning_rate (--learning-rate)", self.learning_rate, 0, low_open=True)
        if isinstance(self.recipe, dict):
            object.__setattr__(self, "recipe", FinetuneRecipe(**self.recipe))
        self.recipe.check_against(self.spec())

    @property
    def pretrain_steps(self) -> int:
        """Environment steps pretraining takes: ``timesteps`` rounded up to whole collection rounds.

        stable-baselines3 stops only between rounds (:func:`steps_per_round`: PPO
        256 steps x ``num_envs``, SAC ``num_envs``), so ``timesteps=3000`` with PPO
        and 8 envs trains 2 rollouts of 2,048 steps: 4,096 steps.
        """
        per_round = steps_per_round(self.algo, default_hyperparameters(self.algo), self.num_envs)
        return -(-self.timesteps // per_round) * per_round

    def spec(self) -> ModelSpec:
        """The description of the model this config pretrains."""
        return make_spec(self.family, self.algo, self.hidden_sizes, self.normalize_obs,
                         {"learning_rate": self.learning_rate})

    def to_config(self, device: str) -> dict[str, Any]:
        """The run's ``config.json`` content."""
        return {"method": METHOD, **dataclasses.asdict(self), "device": device}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FinetuneConfig:
        """Rebuild from a ``config.json``; refuses another method's run."""
        if config.get("method") != METHOD:
            raise ValueError(
                f"this run directory holds a {config.get('method')!r} run, not a {METHOD!r} run; "
                f"use the loader of method {config.get('method')!r} (metarl evaluate dispatches on it)"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})
