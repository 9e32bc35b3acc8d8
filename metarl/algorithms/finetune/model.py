"""Building SB3 models, their state as tensors, the pretrained store and the fine-tuning recipe."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnv, VecNormalize
from torch import nn

from metarl.algorithms.finetune.config import (
    _OBS_MEAN,
    _OBS_VAR,
    ACTIVATIONS,
    METHOD,
    FinetuneRecipe,
    ModelSpec,
)
from metarl.algorithms.finetune.envs import make_vec_env, wrap_normalization
from metarl.algorithms.finetune.registry import adapter, adapter_of
from metarl.algorithms.finetune.sac import LOG_ENT_COEF
from metarl.storage.checkpoint import (
    CheckpointError,
    check_compatible,
    load_checkpoint,
    save_checkpoint,
)


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
    algorithm = adapter(spec.algo)
    policy_kwargs = algorithm.policy_kwargs(hidden, activation, spec.log_std_init)
    model: BaseAlgorithm = algorithm.sb3_class("MlpPolicy", env, policy_kwargs=policy_kwargs, device=device,
                                               verbose=0, **kwargs)
    # Without a logger of its own, every learn() call makes SB3 configure one
    # in a fresh empty SB3-<date> folder under the system temp dir: a 40-task
    # evaluation left hundreds of them. metarl logs through MetricsLogger.
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def model_state(model: BaseAlgorithm, env: VecEnv) -> dict[str, torch.Tensor]:
    """Tensors to save: the policy's state dict, SAC's entropy coefficient, obs statistics."""
    state = {name: value.detach().cpu().clone().contiguous() for name, value in model.policy.state_dict().items()}
    state.update(adapter_of(model).extra_state(model))
    if isinstance(env, VecNormalize):
        state[_OBS_MEAN] = torch.as_tensor(env.obs_rms.mean, dtype=torch.float64).clone()
        state[_OBS_VAR] = torch.as_tensor(env.obs_rms.var, dtype=torch.float64).clone()
    return state


def load_model_state(model: BaseAlgorithm, state: dict[str, torch.Tensor]) -> None:
    """Load :func:`model_state` output into a model built from the same spec."""
    policy_state = {k: v for k, v in state.items() if k not in (_OBS_MEAN, _OBS_VAR, LOG_ENT_COEF)}
    try:
        model.policy.load_state_dict(policy_state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"the weights do not match the model description: {error}") from None
    adapter_of(model).load_extra_state(model, state)


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
    found = {k: tuple(v.shape) for k, v in state.items() if k not in (_OBS_MEAN, _OBS_VAR, LOG_ENT_COEF)}
    if expected != found:
        differ = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))
        raise CheckpointError(
            f"{path} does not match its description ({spec.algo}, obs {spec.obs_dim}, act {spec.act_dim}, "
            f"hidden {list(spec.hidden_sizes)}): tensors differ: {differ[:6]}"
        )
    if spec.normalize_obs and (_OBS_MEAN not in state or tuple(state[_OBS_MEAN].shape) != (spec.obs_dim,)):
        raise CheckpointError(f"{path} lacks the observation statistics of size {spec.obs_dim} its description requires")


def policy_layers(model: BaseAlgorithm) -> list[list[nn.Module]]:
    """The policy network's layers from the observation up; each entry lists its Linear modules.

    PPO: the hidden Linear layers of ``mlp_extractor.policy_net``, then
    ``[action_net]``. SAC: the hidden Linear layers of ``actor.latent_pi``, then
    ``[mu, log_std]`` (both heads of the actor).
    """
    return adapter_of(model).policy_layers(model)


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
        adapter(spec.algo).new_head(model)
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
    adapter_of(model).rebuild_optimizers(model, learning_rate)


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


def parameter_count(spec: ModelSpec) -> int:
    """Parameters of the policy network that acts (body, head, PPO's log-std), not the critic."""
    model = _untrained_model(spec)
    return adapter(spec.algo).acting_parameter_count(model)


def flops_per_forward(spec: ModelSpec) -> int:
    """2 x the multiply-adds of one policy forward on one observation (Linear layers only)."""
    sizes = [spec.obs_dim, *spec.hidden_sizes]
    body = sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    return body + adapter(spec.algo).heads * 2 * sizes[-1] * spec.act_dim


def _untrained_model(spec: ModelSpec) -> BaseAlgorithm:
    """A freshly initialised model of ``spec`` on CPU (for names, shapes and counts)."""
    env = make_vec_env(spec, 1, np.random.default_rng(0))
    model = build_model(spec, env, torch.device("cpu"))
    env.close()
    return model
