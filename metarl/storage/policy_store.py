"""How every method stores its policy in a run directory, and rebuilds it.

``config.json["policy"]`` holds :func:`policy_config` (sizes, hidden layers, initial std,
nonlinearity, weight init) and the checkpoint holds the weights as ``policy.<parameter name>``
tensors (:func:`policy_tensors`) with ``family``, ``obs_dim`` and ``act_dim`` in its metadata,
so that ``evaluate`` and ``render`` rebuild any run's policy (:func:`load_policy`;
docs/design.md, "Run files"). :func:`gradient_run_document` is the whole ``config.json`` of
the runs whose policy adapts by gradient steps (MAML, pretrain).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from metarl.core.policy import DEFAULT_NONLINEARITY, DEFAULT_WEIGHT_INIT, GaussianMLPPolicy
from metarl.core.rollout import env_dims
from metarl.core.validation import check_number
from metarl.storage.checkpoint import CheckpointError, check_compatible, load_checkpoint
from metarl.storage.run_dir import RunDir, RunDirError

POLICY_PREFIX = "policy."


def policy_config(policy: GaussianMLPPolicy, init_std: float) -> dict[str, Any]:
    """What ``config.json["policy"]`` stores to rebuild ``policy``."""
    return {
        "obs_dim": policy.obs_dim,
        "act_dim": policy.act_dim,
        "hidden_sizes": list(policy.hidden_sizes),
        "init_std": float(init_std),
        "nonlinearity": policy.nonlinearity,
        "weight_init": policy.weight_init,
    }


def policy_tensors(policy: GaussianMLPPolicy) -> dict[str, torch.Tensor]:
    """The policy's weights under the checkpoint names ``policy.<name>``."""
    return {POLICY_PREFIX + name: value.detach() for name, value in policy.named_parameters()}


def build_policy(config: Mapping[str, Any]) -> GaussianMLPPolicy:
    """A freshly initialised policy of the architecture in ``config["policy"]``."""
    spec = config.get("policy")
    if not isinstance(spec, Mapping):
        raise RunDirError("config.json lacks the 'policy' block (obs_dim, act_dim, hidden_sizes, init_std)")
    try:
        sizes = [spec["obs_dim"], spec["act_dim"], *spec["hidden_sizes"]]
        if not all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 1_000_000 for n in sizes):
            raise ValueError(f"obs_dim, act_dim and hidden_sizes must be integers in [1, 1000000], got {sizes}")
        init_std = check_number("policy.init_std", spec["init_std"], 0, low_open=True)
        return GaussianMLPPolicy(
            spec["obs_dim"], spec["act_dim"], tuple(spec["hidden_sizes"]), init_std,
            str(spec.get("nonlinearity", DEFAULT_NONLINEARITY)), str(spec.get("weight_init", DEFAULT_WEIGHT_INIT)),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise RunDirError(f"config.json's 'policy' block is invalid ({type(error).__name__}: {error}); it needs "
                          "obs_dim, act_dim, hidden_sizes and init_std") from None


def load_policy_weights(policy: GaussianMLPPolicy, tensors: Mapping[str, torch.Tensor], where: Any = "") -> None:
    """Copy ``policy.<name>`` tensors into ``policy`` (shapes checked, clear error otherwise)."""
    for name, parameter in policy.named_parameters():
        key = POLICY_PREFIX + name
        if key not in tensors:
            raise RunDirError(f"checkpoint {where} lacks the policy tensor {key!r}")
        if tuple(tensors[key].shape) != tuple(parameter.shape):
            raise RunDirError(
                f"checkpoint {where} holds {key} with shape {tuple(tensors[key].shape)}, but the run's policy "
                f"needs {tuple(parameter.shape)}; the checkpoint belongs to another run"
            )
        with torch.no_grad():
            parameter.copy_(tensors[key].to(parameter.dtype))


def load_policy(run_dir: RunDir, config: Mapping[str, Any] | None = None) -> GaussianMLPPolicy:
    """The policy of a run, from ``config.json`` and ``checkpoint/latest.safetensors`` (on CPU).

    Raises:
        FileNotFoundError: no config or no checkpoint.
        CheckpointError: a corrupted or truncated checkpoint, or one of another env.
    """
    config = run_dir.read_config() if config is None else config
    policy = build_policy(config)
    tensors, metadata = load_checkpoint(run_dir.checkpoint_path)
    check_compatible(metadata, config["family"], policy.obs_dim, policy.act_dim, run_dir.checkpoint_path)
    load_policy_weights(policy, tensors, run_dir.checkpoint_path)
    return policy


def checkpoint_progress(run_dir: RunDir) -> tuple[int | None, int | None] | None:
    """The training iteration and environment steps of the run's checkpoint
    (``checkpoint/latest.safetensors``), each None where its metadata records none (a random
    initialisation); None if there is no checkpoint or it cannot be read (damaged: the commands that
    load it say so)."""
    try:
        _, metadata = load_checkpoint(run_dir.checkpoint_path)
    except (OSError, CheckpointError):
        return None
    iteration, env_steps = metadata.get("iteration"), metadata.get("env_steps")
    return (None if iteration is None else int(iteration)), (None if env_steps is None else int(env_steps))


def gradient_run_document(
    run_config: Any, method: str, seed: int, device: str, preset: str | None
) -> dict[str, Any]:
    """``config.json`` of a run whose policy adapts by gradient steps (MAML, pretrain).

    ``run_config`` is a :class:`metarl.algorithms.presets.MAMLRunConfig`: its fields, plus
    the method, seed, device, preset and the policy block.
    """
    obs_dim, act_dim = env_dims(run_config.family)
    probe = GaussianMLPPolicy(obs_dim, act_dim, run_config.hidden_sizes, run_config.init_std,
                              run_config.nonlinearity, run_config.weight_init)
    return {
        "method": method,
        "preset": preset,
        "seed": seed,
        "device": device,
        **run_config.to_dict(),
        "policy": policy_config(probe, run_config.init_std),
    }
