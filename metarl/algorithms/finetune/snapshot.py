"""The state of a stable-baselines3 pretraining between two rounds, as tensors and JSON.

Everything that a continued ``learn`` reads is captured, so that a pretraining
restored from a checkpoint continues bit-exactly (on CPU) like one that was
never stopped (docs/design.md, "Run files"): the policy's weights and its
optimizers' states, SB3's counters and its current observations
(``_last_obs``, ``_last_episode_starts``, ``_last_original_obs``), the
``VecNormalize`` statistics and buffers, every sub-env (its task, elapsed
steps, the env's and the task mixture's numpy generators, the simulator state:
MuJoCo's ``mjSTATE_INTEGRATION`` via ``mj_getState``, or the point's position)
and the global python / numpy / torch generators SB3 draws from. Tensors go
into safetensors, everything else into the checkpoint's JSON metadata; nothing
is pickled.
"""

from __future__ import annotations

import random
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

import metarl_envs as envs
from metarl.algorithms.finetune.envs import TaskMixtureEnv
from metarl.algorithms.finetune.registry import adapter_of
from metarl.storage.checkpoint import (
    CheckpointError,
    flatten_state,
    restore_numpy_generator,
    unflatten_state,
)
from metarl_envs.mujoco_core import LocomotionEnv
from metarl_envs.point2d import Point2DNavEnv

_MJ_STATE = mujoco.mjtState.mjSTATE_INTEGRATION


class NotResumable(Exception):
    """The pretraining's state cannot be captured for ``--resume`` (the message says why)."""


# ----------------------------------------------------------------------------
# Global generators
# ----------------------------------------------------------------------------


def global_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Python's, numpy's and torch's (CPU) global generator states."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    metadata = {"python": [version, list(internal), gauss],
                "numpy": [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]}
    return {"rng/torch": torch.get_rng_state().clone()}, metadata


def set_global_rng_state(tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Restore what :func:`global_rng_state` captured."""
    version, internal, gauss = metadata["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = metadata["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng/torch"].to(torch.uint8).contiguous())


# ----------------------------------------------------------------------------
# The sub-envs
# ----------------------------------------------------------------------------


def _wrappers(env: gym.Env) -> list[gym.Env]:
    chain = [env]
    while isinstance(chain[-1], gym.Wrapper):
        chain.append(chain[-1].env)
    return chain


def _time_limit(env: gym.Env) -> gym.wrappers.TimeLimit:
    found = [w for w in _wrappers(env) if isinstance(w, gym.wrappers.TimeLimit)]
    if len(found) != 1:
        raise NotResumable(f"expected one TimeLimit wrapper around {type(env.unwrapped).__name__}, found {len(found)}")
    return found[0]


def _env_state(env: TaskMixtureEnv, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    inner = env.unwrapped
    tensors: dict[str, torch.Tensor] = {}
    if isinstance(inner, LocomotionEnv):
        size = mujoco.mj_stateSize(inner.model, _MJ_STATE)
        physics = np.empty(size, dtype=np.float64)
        mujoco.mj_getState(inner.model, inner.data, physics, _MJ_STATE)
        tensors[f"{key}/mj_state"] = torch.from_numpy(physics)
        tensors[f"{key}/position"] = torch.from_numpy(np.array(inner._position, dtype=np.float64))
        extra = {"warning_total": int(inner._warning_total),
                 "warnings": [int(w.number) for w in inner.data.warning]}
    elif isinstance(inner, Point2DNavEnv):
        tensors[f"{key}/position"] = torch.from_numpy(inner._position.astype(np.float64).copy())
        extra = {}
    else:
        raise NotResumable(f"saving the state of a {type(inner).__name__} is not supported")
    metadata = {
        "task": inner.task.to_dict(),
        "elapsed_steps": int(_time_limit(env)._elapsed_steps),
        "env_rng": inner.np_random.bit_generator.state,
        "mixture_rng": env._rng.bit_generator.state,
        **extra,
    }
    return tensors, metadata


def _set_env_state(env: TaskMixtureEnv, key: str, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    inner = env.unwrapped
    task = envs.task_from_dict(metadata["task"])
    inner.reset(options={"task": task})  # the task's model fields; the generators are overwritten below
    inner.np_random = restore_numpy_generator(metadata["env_rng"], "checkpoint", f"{key}.env_rng")
    env._rng.bit_generator.state = restore_numpy_generator(
        metadata["mixture_rng"], "checkpoint", f"{key}.mixture_rng").bit_generator.state
    _time_limit(env)._elapsed_steps = int(metadata["elapsed_steps"])
    if isinstance(inner, LocomotionEnv):
        mujoco.mj_setState(inner.model, inner.data, tensors[f"{key}/mj_state"].numpy().copy(), _MJ_STATE)
        inner._position = tensors[f"{key}/position"].numpy().copy()
        inner._warning_total = int(metadata["warning_total"])
        for warning, number in zip(inner.data.warning, metadata["warnings"], strict=True):
            warning.number = int(number)
    elif isinstance(inner, Point2DNavEnv):
        inner._position = tensors[f"{key}/position"].numpy().copy()
        inner._path = [inner._position.copy()]  # only drawn by render; the path so far is not kept
    else:
        raise NotResumable(f"restoring the state of a {type(inner).__name__} is not supported")


def _dummy(venv: VecEnv) -> DummyVecEnv:
    inner = venv.venv if isinstance(venv, VecNormalize) else venv
    if not isinstance(inner, DummyVecEnv):
        raise NotResumable(f"expected a DummyVecEnv, found {type(inner).__name__}")
    return inner


def _array(value: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(value, copy=True))


def venv_state(venv: VecEnv) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every sub-env's state and the normalisation wrapper's statistics and buffers."""
    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, Any] = {"envs": []}
    for index, env in enumerate(_dummy(venv).envs):
        env_tensors, env_metadata = _env_state(env, f"env/{index}")
        tensors.update(env_tensors)
        metadata["envs"].append(env_metadata)
    if isinstance(venv, VecNormalize):
        for name in ("obs_rms", "ret_rms"):
            rms = getattr(venv, name)
            tensors[f"normalize/{name}.mean"] = _array(rms.mean)
            tensors[f"normalize/{name}.var"] = _array(rms.var)
            metadata[f"{name}.count"] = float(rms.count)
        tensors["normalize/returns"] = _array(venv.returns)
        for name in ("old_obs", "old_reward"):
            if getattr(venv, name, None) is not None:
                tensors[f"normalize/{name}"] = _array(getattr(venv, name))
    return tensors, metadata


def set_venv_state(venv: VecEnv, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Restore :func:`venv_state` into a vector env built like the saved one (and reset once)."""
    envs_list = _dummy(venv).envs
    if len(envs_list) != len(metadata["envs"]):
        raise CheckpointError(f"the checkpoint holds {len(metadata['envs'])} envs, the run has {len(envs_list)}")
    for index, (env, env_metadata) in enumerate(zip(envs_list, metadata["envs"], strict=True)):
        _set_env_state(env, f"env/{index}", tensors, env_metadata)
    if isinstance(venv, VecNormalize):
        for name in ("obs_rms", "ret_rms"):
            rms = getattr(venv, name)
            rms.mean = tensors[f"normalize/{name}.mean"].numpy().copy()
            rms.var = tensors[f"normalize/{name}.var"].numpy().copy()
            rms.count = float(metadata[f"{name}.count"])
        venv.returns = tensors["normalize/returns"].numpy().copy()
        for name in ("old_obs", "old_reward"):
            if f"normalize/{name}" in tensors:
                setattr(venv, name, tensors[f"normalize/{name}"].numpy().copy())


# ----------------------------------------------------------------------------
# The SB3 model
# ----------------------------------------------------------------------------

_COUNTERS = ("num_timesteps", "_n_updates", "_episode_num", "_num_timesteps_at_start", "_total_timesteps")
_OBSERVATIONS = ("_last_obs", "_last_episode_starts", "_last_original_obs")


def algorithm_state(model: BaseAlgorithm) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights (policy and extras), optimizer states, counters and current observations of ``model``."""
    algorithm = adapter_of(model)
    tensors = {f"model/{name}": value.detach().cpu().clone()
               for name, value in model.policy.state_dict().items()}
    tensors.update({f"model/{name}": value for name, value in algorithm.extra_state(model).items()})
    metadata: dict[str, Any] = {"counters": {name: int(getattr(model, name)) for name in _COUNTERS},
                                "progress_remaining": float(model._current_progress_remaining),
                                "optimizers": {}}
    for name, optimizer in algorithm.optimizers(model).items():
        optimizer_tensors, tree = flatten_state(optimizer.state_dict(), f"optim/{name}/")
        tensors.update({k: v.detach().cpu().clone() for k, v in optimizer_tensors.items()})
        metadata["optimizers"][name] = tree
    for name in _OBSERVATIONS:
        value = getattr(model, name, None)
        if value is not None:
            tensors[f"sb3/{name}"] = _array(value)
    return tensors, metadata


def set_algorithm_state(model: BaseAlgorithm, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Restore :func:`algorithm_state` into a model built from the same description."""
    algorithm = adapter_of(model)
    weights = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    extra = algorithm.extra_state(model)
    model.policy.load_state_dict({k: v for k, v in weights.items() if k not in extra}, strict=True)
    algorithm.load_extra_state(model, weights)
    optimizers = algorithm.optimizers(model)
    if set(optimizers) != set(metadata["optimizers"]):
        raise CheckpointError(f"the checkpoint has optimizers {sorted(metadata['optimizers'])}, "
                              f"the model {sorted(optimizers)}")
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(unflatten_state(tensors, metadata["optimizers"][name]))
    for name, value in metadata["counters"].items():
        setattr(model, name, int(value))
    model._current_progress_remaining = float(metadata["progress_remaining"])
    for name in _OBSERVATIONS:
        if f"sb3/{name}" in tensors:
            setattr(model, name, tensors[f"sb3/{name}"].numpy().copy())
