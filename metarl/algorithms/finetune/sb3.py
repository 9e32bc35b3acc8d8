"""Fine-tune baseline with stable-baselines3: pretrain on the task mixture, fine-tune per task.

This is the baseline a practitioner tries first (docs/design.md, "Algorithms" (b)). A
stable-baselines3 PPO (or SAC) agent is pretrained on the *mixture* of train
tasks: :class:`TaskMixtureEnv` draws a fresh train task at every episode from
an explicit ``np.random.Generator``. At evaluation a copy of the pretrained
agent is fine-tuned on each unseen task with the sample budget MAML gets for
adaptation, following the fine-tuning recipe (:class:`FinetuneRecipe`):
start from the pretrained model, freeze the lowest ``freeze`` layers of the
policy network, optionally put a fresh task head on top (``new_head``), then
train.

Choices, written down:

- **Architecture.** The policy body is the MAML policy's: tanh hidden layers
  (100, 100) for PPO; SAC keeps its customary ReLU. The critic has its own
  network of the same widths. "Layers" of the policy network are its Linear
  layers from the observation up: the hidden layers, then the action head
  (PPO: ``action_net``; SAC: ``mu`` and ``log_std`` together). ``freeze=N``
  sets ``requires_grad=False`` on the lowest N and rebuilds the optimizers
  over the trainable parameters only, so frozen tensors stay bit-for-bit
  unchanged. ``new_head`` replaces the head with a freshly initialised layer
  (SB3's own initialisation) and keeps the body and PPO's state-independent
  log-std. The critic is never frozen: it only serves training.
- **Actions** are learnt in [-1, 1] and mapped affinely onto the env's action
  box (:func:`rescale_action`), as stable-baselines3 recommends; Point2DNav's
  [-0.1, 0.1] steps would otherwise drown in unit-variance exploration noise.
- **Observation normalisation** (optional, on by default): SB3's
  ``VecNormalize`` statistics are learnt during pretraining and then frozen;
  fine-tuning and evaluation use them unchanged.
- **Budget.** One adaptation step of MAML uses ``episodes_per_step`` (20)
  episodes of ``horizon`` steps. Here one "budget chunk" is
  ``episodes_per_step * horizon`` environment steps of training on the task
  (PPO: one rollout of ``episodes_per_step`` envs x ``horizon`` steps, then one
  update; SAC: that many transitions with one gradient step each). Return k
  is measured after k chunks (k = 0 is the pretrained policy) on
  ``episodes_per_step`` separate evaluation episodes of the stochastic policy
  (MAML's returns are also those of its stochastic policy); evaluation
  episodes are not counted as adaptation samples.
- **Files, never pickle.** The weights are a safetensors file (the SB3 policy's
  ``state_dict``, SAC's entropy coefficient and the normalisation statistics)
  beside a JSON description (:class:`ModelSpec`: algorithm, architecture,
  sizes, hyperparameters) from which the SB3 model is rebuilt before the
  state dict is loaded. SB3's own ``save``/``load`` (zip + pickle) is not used.
- **Randomness.** Task draws and evaluation noise come from explicit
  generators derived from the run seed. SB3 seeds and consumes the *global*
  python/numpy/torch generators internally; every call into SB3 here runs
  inside :func:`isolated_global_rng`, which seeds them from our generator and
  restores their previous state afterwards.

This is the only module of metarl that imports stable_baselines3.

References: Raffin et al. 2021 (Stable-Baselines3); Schulman et al. 2017 (PPO);
Haarnoja et al. 2018 (SAC); Finn et al. 2017 (MAML), the "pretrained" baseline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize
from torch import nn
from tqdm import tqdm

import metarl_envs as envs
from metarl.core.device import resolve_device
from metarl.core.interrupts import sigterm_as_interrupt
from metarl.core.policy import GaussianMLPPolicy
from metarl.core.validation import check_memory, check_number
from metarl.evaluation.protocol import (
    AdaptationResult,
    EvalOptions,
    eval_document,
    options_tasks,
    write_eval_json,
)
from metarl.storage.checkpoint import (
    CheckpointError,
    check_compatible,
    load_checkpoint,
    save_checkpoint,
)
from metarl.storage.runs import CHECKPOINT_DIR, ENV_BYTES, MetricsLogger, RunDir, writing_run
from metarl_envs.tasks import Task

ALGOS: tuple[str, ...] = ("ppo", "sac")
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
METHOD = "finetune"
WEIGHTS_FILE = "policy.safetensors"
SPEC_FORMAT = "metarl-finetune-sb3/1"
_OBS_MEAN, _OBS_VAR, _LOG_ENT_COEF = "obs_rms.mean", "obs_rms.var", "log_ent_coef"
_SEED_LIMIT = 2**31 - 1


# ----------------------------------------------------------------------------
# The task-mixture env
# ----------------------------------------------------------------------------


def rescale_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map ``action  # [..., act_dim]`` from [-1, 1] affinely onto the box [low, high]."""
    action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    return low + (action + 1.0) * 0.5 * (high - low)


class TaskMixtureEnv(gym.Wrapper):
    """A suite env that starts every episode on a new task.

    Each ``reset`` draws the episode's task from ``rng``: a fresh task of
    ``split`` from the family's distribution, or (when ``tasks`` is given) one
    of ``tasks`` uniformly; a single task makes a fixed-task env for
    fine-tuning. The action space is [-1, 1]^act_dim, rescaled onto the env's
    box. ``info["task"]`` holds the episode's task after ``reset``.

    Args:
        family: a task family name (``envs.FAMILIES``).
        rng: the generator every task draw comes from.
        split: the split fresh tasks are drawn from (when ``tasks`` is None).
        tasks: a fixed pool of tasks to draw from instead.
    """

    def __init__(
        self,
        family: str,
        rng: np.random.Generator,
        split: str = "train",
        tasks: Sequence[Task] | None = None,
    ) -> None:
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        super().__init__(gym.make(envs.env_id(family)))
        self.family = family
        self._distribution = envs.distribution(family)
        if tasks is None and split not in self._distribution.splits:
            raise ValueError(f"{family} has no split {split!r}; available: {self._distribution.splits}")
        if tasks is not None and len(tasks) == 0:
            raise ValueError("tasks must hold at least one task (or be None to draw fresh ones)")
        self._rng, self._split = rng, split
        self._tasks = list(tasks) if tasks is not None else None
        box = self.env.action_space
        if not isinstance(box, gym.spaces.Box):
            raise ValueError(f"{family} has a non-Box action space {box}; fine-tuning needs a Box")
        self._low, self._high = box.low.astype(np.float64), box.high.astype(np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=box.shape, dtype=np.float32)

    def draw_task(self) -> Task:
        """The task of the next episode (consumes the generator)."""
        if self._tasks is not None:
            return self._tasks[int(self._rng.integers(len(self._tasks)))]
        return self._distribution.sample(1, self._split, self._rng)[0]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if options:
            raise ValueError(f"TaskMixtureEnv.reset takes no options (it draws the task), got {options}")
        task = self.draw_task()
        obs, info = self.env.reset(seed=seed, options={"task": task})
        return obs, {**info, "task": task}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        return self.env.step(rescale_action(action, self._low, self._high))


# ----------------------------------------------------------------------------
# The JSON description of a model, and the recipe
# ----------------------------------------------------------------------------


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
        for name in ("freeze",):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        for name in ("ppo_epochs", "ppo_minibatches", "episodes_per_step", "num_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
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


# ----------------------------------------------------------------------------
# Building, saving and loading models
# ----------------------------------------------------------------------------


def default_hyperparameters(algo: str) -> dict[str, Any]:
    """SB3 keyword arguments used for pretraining (SB3's defaults, with a smaller SAC buffer)."""
    if algo == "ppo":
        return {"learning_rate": 3e-4, "n_steps": 256, "batch_size": 64, "n_epochs": 10, "gamma": 0.99,
                "gae_lambda": 0.95, "clip_range": 0.2, "ent_coef": 0.0, "vf_coef": 0.5, "max_grad_norm": 0.5}
    if algo == "sac":
        return {"learning_rate": 3e-4, "buffer_size": 300_000, "learning_starts": 1000, "batch_size": 256,
                "tau": 0.005, "gamma": 0.99, "train_freq": 1, "gradient_steps": 1}
    raise ValueError(f"algo must be one of {list(ALGOS)}, got {algo!r}")


def steps_per_round(algo: str, hyperparameters: dict[str, Any], num_envs: int) -> int:
    """Environment steps of one collection round of stable-baselines3's ``learn``.

    ``learn`` stops only between rounds, so it trains a whole number of them: a
    PPO rollout is ``n_steps`` steps in each of the ``num_envs`` envs; a SAC round
    is ``train_freq`` steps (an int: steps, not episodes) of every env.
    """
    if algo == "ppo":
        return int(hyperparameters["n_steps"]) * num_envs
    if algo == "sac":
        return int(hyperparameters["train_freq"]) * num_envs
    raise ValueError(f"algo must be one of {list(ALGOS)}, got {algo!r}")


def make_spec(
    family: str,
    algo: str,
    hidden_sizes: tuple[int, ...] = (100, 100),
    normalize_obs: bool = True,
    hyperparameters: dict[str, Any] | None = None,
) -> ModelSpec:
    """The description of a new model for ``family`` (sizes read from the env)."""
    env = gym.make(envs.env_id(family))
    try:
        obs_dim = int(np.prod(env.observation_space.shape))
        act_dim = int(np.prod(env.action_space.shape))
    finally:
        env.close()
    hyper = default_hyperparameters(algo)
    hyper.update(hyperparameters or {})
    return ModelSpec(
        algo=algo, family=family, obs_dim=obs_dim, act_dim=act_dim, hidden_sizes=tuple(hidden_sizes),
        activation="tanh" if algo == "ppo" else "relu", log_std_init=0.0 if algo == "ppo" else -3.0,
        normalize_obs=normalize_obs, hyperparameters=hyper,
    )


def make_vec_env(
    spec: ModelSpec, num_envs: int, rng: np.random.Generator, split: str = "train",
    tasks: Sequence[Task] | None = None,
) -> DummyVecEnv:
    """``num_envs`` :class:`TaskMixtureEnv` copies, each with its own child of ``rng``."""
    children = rng.spawn(num_envs)
    return DummyVecEnv([
        (lambda child=child: TaskMixtureEnv(spec.family, child, split=split, tasks=tasks))
        for child in children
    ])


def wrap_normalization(spec: ModelSpec, venv: VecEnv, training: bool,
                       statistics: dict[str, torch.Tensor] | None = None) -> VecEnv:
    """Add SB3's observation normalisation when ``spec.normalize_obs`` (rewards untouched).

    With ``statistics`` (mean and var tensors) the running statistics are
    restored; ``training=False`` freezes them.
    """
    if not spec.normalize_obs:
        return venv
    wrapped = VecNormalize(venv, training=training, norm_obs=True, norm_reward=False,
                           clip_obs=spec.obs_clip, epsilon=spec.obs_epsilon)
    if statistics is not None:
        wrapped.obs_rms.mean = statistics[_OBS_MEAN].double().numpy().copy()
        wrapped.obs_rms.var = statistics[_OBS_VAR].double().numpy().copy()
        wrapped.obs_rms.count = spec.obs_count
    return wrapped


def build_model(spec: ModelSpec, env: VecEnv, device: torch.device,
                overrides: dict[str, Any] | None = None) -> BaseAlgorithm:
    """A fresh SB3 model with ``spec``'s architecture on ``env`` (hyperparameters + ``overrides``)."""
    if env.observation_space.shape != (spec.obs_dim,) or env.action_space.shape != (spec.act_dim,):
        raise ValueError(
            f"the model is for obs/act sizes ({spec.obs_dim}, {spec.act_dim}) but the env has "
            f"{env.observation_space.shape}, {env.action_space.shape}"
        )
    hidden = list(spec.hidden_sizes)
    activation = ACTIVATIONS[spec.activation]
    kwargs = {**spec.hyperparameters, **(overrides or {})}
    model: BaseAlgorithm
    if spec.algo == "ppo":
        policy_kwargs = {"net_arch": {"pi": hidden, "vf": hidden}, "activation_fn": activation,
                         "log_std_init": spec.log_std_init}
        model = PPO("MlpPolicy", env, policy_kwargs=policy_kwargs, device=device, verbose=0, **kwargs)
    else:
        policy_kwargs = {"net_arch": {"pi": hidden, "qf": hidden}, "activation_fn": activation,
                         "log_std_init": spec.log_std_init}
        model = SAC("MlpPolicy", env, policy_kwargs=policy_kwargs, device=device, verbose=0, **kwargs)
    # Without a logger of its own, every learn() call makes SB3 configure one
    # in a fresh empty SB3-<date> folder under the system temp dir: a 40-task
    # evaluation left hundreds of them. metarl logs through MetricsLogger.
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def model_state(model: BaseAlgorithm, env: VecEnv) -> dict[str, torch.Tensor]:
    """Tensors to save: the policy's state dict, SAC's entropy coefficient, obs statistics."""
    state = {name: value.detach().cpu().clone().contiguous() for name, value in model.policy.state_dict().items()}
    if isinstance(model, SAC) and model.log_ent_coef is not None:
        state[_LOG_ENT_COEF] = model.log_ent_coef.detach().cpu().clone()
    if isinstance(env, VecNormalize):
        state[_OBS_MEAN] = torch.as_tensor(env.obs_rms.mean, dtype=torch.float64).clone()
        state[_OBS_VAR] = torch.as_tensor(env.obs_rms.var, dtype=torch.float64).clone()
    return state


def load_model_state(model: BaseAlgorithm, state: dict[str, torch.Tensor]) -> None:
    """Load :func:`model_state` output into a model built from the same spec."""
    policy_state = {k: v for k, v in state.items() if k not in (_OBS_MEAN, _OBS_VAR, _LOG_ENT_COEF)}
    try:
        model.policy.load_state_dict(policy_state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"the weights do not match the model description: {error}") from None
    if isinstance(model, SAC) and _LOG_ENT_COEF in state and model.log_ent_coef is not None:
        with torch.no_grad():
            model.log_ent_coef.copy_(state[_LOG_ENT_COEF].to(model.log_ent_coef.device))


def save_pretrained(path: str | os.PathLike, spec: ModelSpec, state: dict[str, torch.Tensor]) -> None:
    """Write the weights to ``path`` (``.safetensors``) with ``spec`` as its JSON metadata.

    Uses :func:`metarl.storage.checkpoint.save_checkpoint`: atomic, digest-checked, and a
    human-readable ``<name>.json`` copy of the description beside it.
    """
    metadata = {"method": METHOD, "family": spec.family, "obs_dim": spec.obs_dim, "act_dim": spec.act_dim,
                "model": spec.to_dict()}
    save_checkpoint(path, state, metadata)


def load_pretrained(path: str | os.PathLike) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """Read what :func:`save_pretrained` wrote; never unpickles.

    Raises:
        FileNotFoundError: the file is missing.
        CheckpointError: (a ``ValueError``) the file is corrupted or truncated,
            is not a fine-tune checkpoint, or its tensors do not match its
            description (names, shapes, obs/act sizes).
    """
    state, metadata = load_checkpoint(path)
    if metadata.get("method") != METHOD or "model" not in metadata:
        raise CheckpointError(
            f"{path} is a checkpoint of method {metadata.get('method')!r}, not a {METHOD!r} model; "
            f"load it with that method's loader"
        )
    try:
        spec = ModelSpec.from_dict(metadata["model"])
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: the model description is invalid: {error}") from None
    check_compatible(metadata, spec.family, spec.obs_dim, spec.act_dim, path)
    _check_state_against_spec(spec, state, Path(path))
    return spec, state


def _check_state_against_spec(spec: ModelSpec, state: dict[str, torch.Tensor], path: Path) -> None:
    """Build the model on CPU and compare names and shapes, so a mismatch is reported clearly."""
    model = _untrained_model(spec)
    expected = {k: tuple(v.shape) for k, v in model.policy.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items() if k not in (_OBS_MEAN, _OBS_VAR, _LOG_ENT_COEF)}
    if expected != found:
        differ = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))
        raise CheckpointError(
            f"{path} does not match its description ({spec.algo}, obs {spec.obs_dim}, act {spec.act_dim}, "
            f"hidden {list(spec.hidden_sizes)}): tensors differ: {differ[:6]}"
        )
    if spec.normalize_obs and (_OBS_MEAN not in state or tuple(state[_OBS_MEAN].shape) != (spec.obs_dim,)):
        raise CheckpointError(f"{path} lacks the observation statistics of size {spec.obs_dim} its description requires")


# ----------------------------------------------------------------------------
# The fine-tuning recipe: freeze, new head
# ----------------------------------------------------------------------------


def policy_layers(model: BaseAlgorithm) -> list[list[nn.Module]]:
    """The policy network's layers from the observation up; each entry lists its Linear modules.

    PPO: the hidden Linear layers of ``mlp_extractor.policy_net``, then
    ``[action_net]``. SAC: the hidden Linear layers of ``actor.latent_pi``, then
    ``[mu, log_std]`` (both heads of the actor).
    """
    if isinstance(model, PPO):
        body = [m for m in model.policy.mlp_extractor.policy_net if isinstance(m, nn.Linear)]
        return [[m] for m in body] + [[model.policy.action_net]]
    if isinstance(model, SAC):
        body = [m for m in model.actor.latent_pi if isinstance(m, nn.Linear)]
        return [[m] for m in body] + [[model.actor.mu, model.actor.log_std]]
    raise ValueError(f"unsupported model type {type(model).__name__}; supported: PPO, SAC")


def apply_recipe(model: BaseAlgorithm, spec: ModelSpec, recipe: FinetuneRecipe) -> list[str]:
    """Put a fresh head on (``new_head``), freeze the lowest layers, rebuild the optimizers.

    Call it after the pretrained weights are loaded. The fresh head draws its
    initial weights from the global torch generator (seed it, see
    :func:`isolated_global_rng`).

    Returns:
        The names (in ``model.policy.state_dict()``) of the frozen tensors.
    """
    recipe.check_against(spec)
    if recipe.new_head:
        if isinstance(model, PPO):
            old = model.policy.action_net
            head = nn.Linear(old.in_features, old.out_features).to(old.weight.device)
            nn.init.orthogonal_(head.weight, gain=0.01)  # SB3's initialisation of the action head
            nn.init.zeros_(head.bias)
            model.policy.action_net = head
        else:
            for name in ("mu", "log_std"):
                old = getattr(model.actor, name)
                setattr(model.actor, name, nn.Linear(old.in_features, old.out_features).to(old.weight.device))
    frozen_modules = [m for layer in policy_layers(model)[: recipe.freeze] for m in layer]
    frozen_ids = {id(p) for m in frozen_modules for p in m.parameters()}
    for module in frozen_modules:
        module.requires_grad_(False)
    _rebuild_optimizers(model, recipe.learning_rate)
    return [name for name, p in model.policy.named_parameters() if id(p) in frozen_ids]


def _rebuild_optimizers(model: BaseAlgorithm, learning_rate: float) -> None:
    """Fresh Adam optimizers over the trainable parameters only, at ``learning_rate``."""
    model.learning_rate = learning_rate
    model.lr_schedule = lambda _progress: learning_rate
    policy = model.policy
    if isinstance(model, PPO):
        trainable = [p for p in policy.parameters() if p.requires_grad]
        policy.optimizer = policy.optimizer_class(trainable, lr=learning_rate, **policy.optimizer_kwargs)
        return
    actor, critic = model.actor, model.critic
    actor.optimizer = policy.optimizer_class(
        [p for p in actor.parameters() if p.requires_grad], lr=learning_rate, **policy.optimizer_kwargs
    )
    critic.optimizer = policy.optimizer_class(
        [p for p in critic.parameters() if p.requires_grad], lr=learning_rate, **policy.optimizer_kwargs
    )
    if model.ent_coef_optimizer is not None:
        model.ent_coef_optimizer = torch.optim.Adam([model.log_ent_coef], lr=learning_rate)


@contextlib.contextmanager
def isolated_global_rng(seed: int) -> Iterator[None]:
    """Seed python's, numpy's and torch's global generators with ``seed``; restore them after.

    stable-baselines3 draws from the global generators (minibatch order,
    exploration noise, replay sampling); this confines that to a seeded block.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


# ----------------------------------------------------------------------------
# Acting and evaluating
# ----------------------------------------------------------------------------


def policy_actions(model: BaseAlgorithm, obs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Actions in [-1, 1] for ``obs  # [batch, obs_dim]`` (already normalised).

    With a generator the action is sampled from the policy's distribution
    (PPO: Gaussian, clipped to [-1, 1] as SB3 does; SAC: tanh-squashed
    Gaussian); without one it is the deterministic (mean) action.
    Returns ``[batch, act_dim]``.
    """
    with torch.no_grad():
        if isinstance(model, PPO):
            distribution = model.policy.get_distribution(obs).distribution
            mean, std = distribution.mean, distribution.stddev  # [batch, act_dim]
            if generator is None:
                return mean.clamp(-1.0, 1.0)
            noise = torch.randn(mean.shape, generator=generator).to(mean.device)
            return (mean + std * noise).clamp(-1.0, 1.0)
        if isinstance(model, SAC):
            mean, log_std, _ = model.actor.get_action_dist_params(obs)  # [batch, act_dim] each
            if generator is None:
                return torch.tanh(mean)
            noise = torch.randn(mean.shape, generator=generator).to(mean.device)
            return torch.tanh(mean + log_std.exp() * noise)
    raise ValueError(f"unsupported model type {type(model).__name__}; supported: PPO, SAC")


def rollout_returns(
    model: BaseAlgorithm, spec: ModelSpec, tasks: Sequence[Task], episodes: int,
    generator: torch.Generator, normalizer: VecNormalize | None = None,
) -> np.ndarray:
    """Undiscounted returns of ``episodes`` stochastic episodes on each task.

    Runs all ``len(tasks) * episodes`` episodes at once in the family's batched
    vector env (one policy forward per step). Reset seeds and action noise come
    from ``generator``. Returns ``[len(tasks), episodes]``.
    """
    tasks = list(tasks)
    horizon = envs.family_spec(spec.family).horizon
    num = len(tasks) * episodes
    vector_env = gym.make_vec(envs.env_id(spec.family), num_envs=num, vectorization_mode="vector_entry_point")
    try:
        box = vector_env.single_action_space
        low, high = box.low.astype(np.float64), box.high.astype(np.float64)
        vector_env.set_tasks([task for task in tasks for _ in range(episodes)])
        seed = int(torch.randint(_SEED_LIMIT, (1,), generator=generator))
        obs, _ = vector_env.reset(seed=seed)
        returns = np.zeros(num)
        running = np.ones(num, dtype=bool)
        device = model.device
        for _ in range(horizon):
            if normalizer is not None:
                obs = normalizer.normalize_obs(obs)
            obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=device)  # [num, obs_dim]
            actions = policy_actions(model, obs_t, generator).cpu().numpy()  # [num, act_dim]
            obs, rewards, terminated, truncated, _ = vector_env.step(rescale_action(actions, low, high))
            returns += np.where(running, rewards, 0.0)
            running &= ~(terminated | truncated)
            if not running.any():
                break
    finally:
        vector_env.close()
    return returns.reshape(len(tasks), episodes)


def _normalizer_for(spec: ModelSpec, state: dict[str, torch.Tensor]) -> VecNormalize | None:
    if not spec.normalize_obs:
        return None
    venv = make_vec_env(spec, 1, np.random.default_rng(0))
    return wrap_normalization(spec, venv, training=False, statistics=state)


def load_policy(spec: ModelSpec, state: dict[str, torch.Tensor], device: torch.device) -> tuple[BaseAlgorithm, VecNormalize | None]:
    """The pretrained model (rebuilt from ``spec``, weights from ``state``) and its frozen obs normaliser."""
    env = make_vec_env(spec, 1, np.random.default_rng(0))
    model = build_model(spec, env, device)
    load_model_state(model, state)
    return model, _normalizer_for(spec, state)


@dataclasses.dataclass
class TaskResult:
    """Fine-tuning on one task: returns after k = 0..num_steps chunks, samples, seconds."""

    task: Task
    returns: list[float]
    samples_per_step: int
    adapt_seconds: float


def prepare_finetune(
    spec: ModelSpec, state: dict[str, torch.Tensor], task: Task, recipe: FinetuneRecipe,
    env_seed: int, device: torch.device,
) -> tuple[BaseAlgorithm, VecEnv]:
    """A fresh copy of the pretrained model, recipe applied, on a fixed-task env of ``task``.

    Call it inside :func:`isolated_global_rng` (the fresh head and SB3 draw from
    the global generators). The env runs ``episodes_per_step`` copies of the
    task, so that one PPO rollout of ``horizon`` steps is one budget chunk.
    """
    recipe.check_against(spec)
    horizon = envs.family_spec(spec.family).horizon
    chunk = recipe.episodes_per_step * horizon
    venv = make_vec_env(spec, recipe.episodes_per_step, np.random.default_rng(env_seed), tasks=[task])
    venv.seed(env_seed % _SEED_LIMIT)
    venv = wrap_normalization(spec, venv, training=False, statistics=state)
    if spec.algo == "ppo":
        overrides = {"n_steps": horizon, "n_epochs": recipe.ppo_epochs,
                     "batch_size": max(1, chunk // recipe.ppo_minibatches), "learning_rate": recipe.learning_rate}
    else:  # SAC: a fresh replay buffer for the task; warm-started, so no random warm-up
        overrides = {"learning_starts": 0, "buffer_size": chunk * recipe.num_steps,
                     "learning_rate": recipe.learning_rate, "train_freq": 1, "gradient_steps": -1}
    model = build_model(spec, venv, device, overrides=overrides)
    load_model_state(model, state)
    apply_recipe(model, spec, recipe)
    return model, venv


def finetune_on_task(
    spec: ModelSpec, state: dict[str, torch.Tensor], task: Task, recipe: FinetuneRecipe,
    seed: int, device: torch.device,
) -> TaskResult:
    """Fine-tune a fresh copy of the pretrained model on ``task``; measure returns k = 0..num_steps.

    ``seed`` determines everything random here (env resets, SB3's minibatch
    order and exploration, the fresh head, evaluation noise).
    """
    chunk = recipe.episodes_per_step * envs.family_spec(spec.family).horizon
    env_seed, sb3_seed, eval_seed = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(3))
    eval_generator = torch.Generator().manual_seed(eval_seed)
    with isolated_global_rng(sb3_seed):
        model, venv = prepare_finetune(spec, state, task, recipe, env_seed, device)
        normalizer = venv if isinstance(venv, VecNormalize) else None

        def evaluate() -> float:
            return float(rollout_returns(model, spec, [task], recipe.episodes_per_step, eval_generator,
                                         normalizer).mean())

        returns = [evaluate()]
        adapt_seconds = 0.0
        for _ in range(recipe.num_steps):
            start = time.perf_counter()
            model.learn(total_timesteps=chunk, reset_num_timesteps=False)
            adapt_seconds += time.perf_counter() - start
            returns.append(evaluate())
        venv.close()
    return TaskResult(task=task, returns=returns, samples_per_step=chunk, adapt_seconds=adapt_seconds)


def parameter_count(spec: ModelSpec) -> int:
    """Parameters of the policy network that acts (body, head, PPO's log-std), not the critic."""
    model = _untrained_model(spec)
    if isinstance(model, PPO):
        modules = [model.policy.mlp_extractor.policy_net, model.policy.action_net]
        return sum(p.numel() for m in modules for p in m.parameters()) + model.policy.log_std.numel()
    return sum(p.numel() for p in model.actor.parameters())


def flops_per_forward(spec: ModelSpec) -> int:
    """2 x the multiply-adds of one policy forward on one observation (Linear layers only)."""
    sizes = [spec.obs_dim, *spec.hidden_sizes]
    body = sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    heads = 2 if spec.algo == "sac" else 1  # SAC's actor has a mean and a log-std head
    return body + heads * 2 * sizes[-1] * spec.act_dim


def _untrained_model(spec: ModelSpec) -> BaseAlgorithm:
    """A freshly initialised model of ``spec`` on CPU (for names, shapes and counts)."""
    env = make_vec_env(spec, 1, np.random.default_rng(0))
    model = build_model(spec, env, torch.device("cpu"))
    env.close()
    return model


# ----------------------------------------------------------------------------
# Pretraining on the task mixture (``metarl train finetune``)
# ----------------------------------------------------------------------------


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
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int (a budget of environment steps), got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
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


class StepProgress(BaseCallback):
    """Advances a progress bar by the env steps of every vector-env step of ``learn``."""

    def __init__(self, bar: tqdm) -> None:
        super().__init__()
        self.bar = bar

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True


class _TrainingMonitor(BaseCallback):
    """Progress bar, and mean episode return per ``log_every`` steps into ``metrics.csv``."""

    def __init__(self, total: int, logger: MetricsLogger | None, log_every: int) -> None:
        super().__init__()
        self._total, self._metrics, self._log_every = total, logger, log_every
        self._bar: tqdm | None = None
        self._running: np.ndarray | None = None
        self._finished: list[float] = []
        self._rows = 0
        self._start = 0.0

    def _on_training_start(self) -> None:
        self._bar = tqdm(total=self._total, desc=f"pretrain {type(self.model).__name__}", unit="step")
        self._running = np.zeros(self.training_env.num_envs)
        self._start = time.perf_counter()

    def _on_step(self) -> bool:
        rewards, dones = np.asarray(self.locals["rewards"]), np.asarray(self.locals["dones"])
        self._running += rewards
        self._finished += [float(r) for r in self._running[dones]]
        self._running[dones] = 0.0
        self._bar.update(self.training_env.num_envs)
        if self.num_timesteps >= (self._rows + 1) * self._log_every and self._finished:
            self._rows += 1
            metrics = {"train/episode_return": float(np.mean(self._finished)),
                       "train/timesteps": float(self.num_timesteps),
                       "time/steps_per_second": self.num_timesteps / (time.perf_counter() - self._start)}
            self._bar.set_postfix(ret=f"{metrics['train/episode_return']:.1f}")
            if self._metrics is not None:
                self._metrics.log(self._rows, metrics)
            self._finished = []
        return True

    def _on_training_end(self) -> None:
        if self._bar is not None:
            self._bar.close()


def pretrain(config: FinetuneConfig, device: torch.device,
             metrics: MetricsLogger | None = None) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """Pretrain an SB3 agent on the train-task mixture; return its description and weights."""
    spec = config.spec()
    horizon = envs.family_spec(config.family).horizon
    env_seed, sb3_seed = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(config.seed).spawn(2))
    with isolated_global_rng(sb3_seed):
        venv = make_vec_env(spec, config.num_envs, np.random.default_rng(env_seed))
        venv.seed(env_seed % _SEED_LIMIT)
        venv = wrap_normalization(spec, venv, training=True)
        model = build_model(spec, venv, device)
        monitor = _TrainingMonitor(config.pretrain_steps, metrics, log_every=10 * horizon * config.num_envs)
        model.learn(total_timesteps=config.timesteps, callback=monitor)
        state = model_state(model, venv)
        venv.close()
    return spec, state


def checkpoint_path(run_dir: RunDir) -> Path:
    """Where a fine-tune run keeps its pretrained weights: ``checkpoint/policy.safetensors``."""
    return run_dir.path / CHECKPOINT_DIR / WEIGHTS_FILE


def train_run(config: FinetuneConfig, out: str | os.PathLike, device_name: str = "auto",
              allow_large: bool = False) -> RunDir:
    """``metarl train finetune``: pretrain, then write config, metrics and weights into ``out``.

    The directory is locked while it is written; an interrupted (Ctrl-C, SIGTERM) or failed
    pretraining leaves no run behind (there is nothing to resume from).
    """
    device = resolve_device(device_name)
    check_memory("pretraining", config.num_envs * ENV_BYTES, f"--num-envs {config.num_envs}", allow_large)
    with writing_run(out, config.to_config(device_name), resume=False) as run_dir, sigterm_as_interrupt():
        run_dir.write_config(config.to_config(device_name))
        metrics = MetricsLogger(run_dir)
        try:
            spec, state = pretrain(config, device, metrics)
        except KeyboardInterrupt:
            # no --resume for stable-baselines3 pretraining: the incomplete run is removed (writing_run)
            print(f"\ninterrupted before the weights were saved: {run_dir.path} was removed (fine-tune "
                  "pretraining cannot be resumed); start it again", file=sys.stderr)
            raise
        finally:
            metrics.close()
        save_pretrained(checkpoint_path(run_dir), spec, state)
    return run_dir


def load_run(path: str | os.PathLike) -> tuple[FinetuneConfig, ModelSpec, dict[str, torch.Tensor]]:
    """Read a fine-tune run directory: its config, model description and weights.

    Raises:
        FileNotFoundError: not a run directory, or no weights in it.
        ValueError: a run of another method, or corrupted weights.
    """
    run_dir = RunDir(path)
    config = FinetuneConfig.from_config(run_dir.read_config())
    spec, state = load_pretrained(checkpoint_path(run_dir))
    if spec.family != config.family:
        raise CheckpointError(f"{checkpoint_path(run_dir)} is for {spec.family!r} but the run is {config.family!r}")
    return config, spec, state


# ----------------------------------------------------------------------------
# Evaluation (``metarl evaluate`` on a fine-tune run)
# ----------------------------------------------------------------------------


def evaluate_tasks(
    spec: ModelSpec, state: dict[str, torch.Tensor], tasks: Sequence[Task], recipe: FinetuneRecipe,
    seed: int, device: torch.device, progress: bool = True,
) -> AdaptationResult:
    """Fine-tune a fresh copy on each task (task ``i`` seeded from ``(seed, i)``); returns ``[tasks, K+1]``."""
    results = []
    bar = tqdm(list(tasks), desc=f"fine-tune {spec.algo} {spec.family}", disable=not progress, leave=False)
    for index, task in enumerate(bar):
        task_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        results.append(finetune_on_task(spec, state, task, recipe, task_seed, device))
        bar.set_postfix(k0=f"{results[-1].returns[0]:.1f}", last=f"{results[-1].returns[-1]:.1f}")
    returns = np.array([r.returns for r in results])  # [tasks, num_steps + 1]
    samples = sum(r.samples_per_step for r in results)  # per budget chunk, summed over tasks (as MAML's)
    seconds = sum(r.adapt_seconds for r in results)
    return AdaptationResult(list(tasks), returns, samples, seconds, [recipe.learning_rate] * recipe.num_steps)


def evaluate_finetune_run(run_dir: RunDir, config: dict[str, Any], options: EvalOptions,
                          progress: bool = True) -> dict[str, Any]:
    """Evaluator for ``method == "finetune"`` runs (``metarl evaluate``); writes ``eval_<split>.json``.

    The evaluation tasks, episodes per step and number of steps are the
    protocol's (:mod:`metarl.evaluation.protocol`); the recipe (freeze, new head, lr)
    is the run's. ``inner_lrs`` in the document are the fine-tuning Adam
    learning rates; ``params`` and ``flops_per_forward`` count the acting
    policy network (not the critic).
    """
    if options.steps < 1:
        raise ValueError(f"steps must be >= 1 for a fine-tune run (budget chunks), got {options.steps}")
    if options.samples_per_step is not None:
        raise ValueError("--samples-per-step is for runs adapted by gradient steps (maml, pretrain, random_init); "
                         "a fine-tune run's budget is --episodes-per-step episodes per chunk")
    run_config, spec, state = load_run(run_dir.path)
    recipe = dataclasses.replace(run_config.recipe, episodes_per_step=options.episodes_per_step,
                                 num_steps=options.steps)
    torch.set_num_threads(1)  # small networks; threads only add contention
    tasks = options_tasks(spec.family, options)
    result = evaluate_tasks(spec, state, tasks, recipe, options.seed, resolve_device(options.device), progress)
    # eval_document counts parameters from a GaussianMLPPolicy: give it PPO's actor architecture (the
    # same MLP + state-independent log-std), and override the counts with the SB3 actor's own below.
    same_shape = GaussianMLPPolicy(spec.obs_dim, spec.act_dim, spec.hidden_sizes)
    extra = {"algo": spec.algo, "recipe": dataclasses.asdict(recipe), "pretrain_timesteps": run_config.pretrain_steps,
             "params": parameter_count(spec), "flops_per_forward": flops_per_forward(spec),
             "macs_per_forward": flops_per_forward(spec) // 2}
    document = eval_document(METHOD, spec.family, options, result, same_shape, extra=extra, progress=progress)
    write_eval_json(run_dir, document)
    return document
