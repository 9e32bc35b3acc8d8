"""The Gaussian MLP policy and functional (torch.func) evaluation of it.

The policy maps an observation to the mean of a diagonal Gaussian through an
MLP with tanh hidden layers (docs/design.md, "Algorithms"; ``nonlinearity="relu"`` is the other
choice: the MAML paper's code used ReLU for its point and locomotion runs);
the log standard deviation is a state-independent parameter vector (as in
rllab's ``GaussianMLPPolicy`` used by MAML and ProMP).

The policy acts in normalised units: where the env's action space is a
bounded box, action ``a`` means ``low + (a + 1) / 2 * (high - low)`` in the
env, clipped to the box (rllab's ``normalize`` wrapper, which the MAML paper's
experiments used), so an initial standard deviation of 1 spans the whole box whatever its
units. :class:`ActionMap` is the one place where that mapping lives; episodes
store the policy's own (normalised) actions, so log-probabilities and their
gradients are those of the policy.

Parameters are handled as explicit dicts (``name -> tensor``) so that adapted
"fast weights" are ordinary tensors: :func:`policy_forward` evaluates the
module with any such dict through ``torch.func.functional_call`` and never
mutates the module; :func:`batched_policy_forward` evaluates one parameter
set per task (what ``torch.func.vmap`` of it would compute, as batched
matrix products).

References: Duan et al. 2016 (rllab); Finn et al. 2017 (MAML), §5.3.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]

LOG_2PI = math.log(2.0 * math.pi)
NONLINEARITIES: tuple[str, ...] = ("tanh", "relu")
"""Hidden-layer nonlinearities the policy (and its closed-form derivatives) support."""
WEIGHT_INITS: tuple[str, ...] = ("pytorch", "xavier", "xavier_small_out")
"""Initialisations of the MLP: PyTorch's ``nn.Linear`` default (uniform weights and biases in
``±1/sqrt(fan_in)``); Xavier-uniform weights with zero biases (rllab's MAML policies); or the
same with the output layer's weights scaled by :data:`SMALL_OUTPUT_SCALE`, so that the initial
mean is nearly 0 everywhere."""
SMALL_OUTPUT_SCALE = 0.01
"""Factor on the output layer's Xavier weights for ``weight_init="xavier_small_out"``."""
DEFAULT_NONLINEARITY, DEFAULT_WEIGHT_INIT = NONLINEARITIES[0], WEIGHT_INITS[0]
"""The defaults, which runs written before these choices existed were trained with."""


def check_weight_init(name: str) -> None:
    """ValueError unless ``name`` is one of :data:`WEIGHT_INITS`."""
    if name not in WEIGHT_INITS:
        raise ValueError(f"unknown weight_init {name!r}; available: {', '.join(WEIGHT_INITS)}")


def check_nonlinearity(name: str) -> None:
    """ValueError unless ``name`` is one of :data:`NONLINEARITIES`."""
    if name not in NONLINEARITIES:
        raise ValueError(f"unknown nonlinearity {name!r}; available: {', '.join(NONLINEARITIES)}")


def hidden_activation(x: torch.Tensor, nonlinearity: str) -> torch.Tensor:
    """The hidden layers' nonlinearity applied to ``x`` (any shape)."""
    return torch.tanh(x) if nonlinearity == "tanh" else torch.relu(x)


class GaussianMLPPolicy(nn.Module):
    """Diagonal Gaussian policy with an MLP mean and a state-independent log-std.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        hidden_sizes: widths of the hidden layers (MAML: (100, 100)).
        init_std: initial standard deviation of every action dimension.
        nonlinearity: the hidden layers' nonlinearity, ``tanh`` (default) or ``relu``.
        weight_init: ``pytorch`` (default), ``xavier`` (Xavier-uniform weights, zero
            biases, as rllab's policies: the mean is exactly 0 at a zero observation) or
            ``xavier_small_out`` (the same with the output weights times
            :data:`SMALL_OUTPUT_SCALE`: the mean is near 0 at every observation).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: tuple[int, ...] = (100, 100),
        init_std: float = 1.0,
        nonlinearity: str = DEFAULT_NONLINEARITY,
        weight_init: str = DEFAULT_WEIGHT_INIT,
    ) -> None:
        super().__init__()
        check_nonlinearity(nonlinearity)
        check_weight_init(weight_init)
        if obs_dim < 1 or act_dim < 1:
            raise ValueError(f"obs_dim and act_dim must be >= 1, got {obs_dim}, {act_dim}")
        if any(h < 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive, got {hidden_sizes}")
        if not init_std > 0:
            raise ValueError(f"init_std must be > 0, got {init_std}")
        self.obs_dim, self.act_dim, self.hidden_sizes = obs_dim, act_dim, tuple(hidden_sizes)
        self.nonlinearity, self.weight_init = nonlinearity, weight_init
        sizes = (obs_dim, *hidden_sizes, act_dim)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        if weight_init in ("xavier", "xavier_small_out"):
            with torch.no_grad():
                for layer in self.layers:
                    nn.init.xavier_uniform_(layer.weight)
                    layer.bias.zero_()
                if weight_init == "xavier_small_out":
                    self.layers[-1].weight.mul_(SMALL_OUTPUT_SCALE)
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``[..., act_dim]`` and log-std ``[act_dim]`` for ``obs  # [..., obs_dim]``."""
        x = obs
        for layer in self.layers[:-1]:
            x = hidden_activation(layer(x), self.nonlinearity)
        return self.layers[-1](x), self.log_std

    def params(self) -> Params:
        """The module's own parameters as a dict (the tensors themselves, not copies)."""
        return dict(self.named_parameters())


def policy_forward(
    policy: GaussianMLPPolicy, params: Params, obs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluate ``policy`` with the parameters ``params`` (fast weights); no mutation."""
    return functional_call(policy, params, (obs,))


def batched_policy_forward(
    policy: GaussianMLPPolicy, task_params: Params, obs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One parameter set per task.

    The same computation as ``vmap(functional_call(policy, ...))`` over tasks,
    written as batched matrix products (``baddbmm`` per layer): the same
    kernels without vmap's per-call overhead, which dominates the small
    per-env-step forwards of the sampler. Differentiable to any order.

    Args:
        task_params: each tensor with a leading task dimension ``[tasks, ...]``.
        obs: ``[tasks, ..., obs_dim]``.

    Returns:
        mean ``[tasks, ..., act_dim]`` and log-std ``[tasks, act_dim]``.
    """
    num_tasks = obs.shape[0]
    x = obs.reshape(num_tasks, math.prod(obs.shape[1:-1]), obs.shape[-1])  # [T, M, obs_dim]
    last = len(policy.layers) - 1
    for index in range(last + 1):
        weight = task_params[f"layers.{index}.weight"]  # [T, out, in]
        bias = task_params[f"layers.{index}.bias"]  # [T, out]
        x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))  # [T, M, out]
        if index < last:
            x = hidden_activation(x, policy.nonlinearity)
    return x.reshape(*obs.shape[:-1], x.shape[-1]), task_params["log_std"]


def stack_params(params: Params, num_tasks: int) -> Params:
    """The same parameters repeated for ``num_tasks`` tasks (a view, ``[tasks, ...]``)."""
    return {name: value.unsqueeze(0).expand(num_tasks, *value.shape) for name, value in params.items()}


def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Log-density of ``actions`` under N(mean, exp(log_std)^2), summed over the last dim."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * LOG_2PI).sum(dim=-1)


def gaussian_kl(
    mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor, log_std_q: torch.Tensor
) -> torch.Tensor:
    """KL(p || q) of diagonal Gaussians, summed over the last dim."""
    var_p, var_q = torch.exp(2 * log_std_p), torch.exp(2 * log_std_q)
    return (log_std_q - log_std_p + (var_p + (mean_p - mean_q).pow(2)) / (2 * var_q) - 0.5).sum(dim=-1)


def gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    """Entropy of a diagonal Gaussian, summed over the last dim."""
    return (log_std + 0.5 * (1.0 + LOG_2PI)).sum(dim=-1)


ACTION_MAP_KINDS: tuple[str, ...] = ("normalized", "clip_then_rescale", "env_units")
"""How :class:`ActionMap` turns an action into the env's: see its ``kind``."""


def clip_then_rescale(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``action  # [..., act_dim]`` clipped to [-1, 1], then mapped affinely onto [low, high] (float64).

    stable-baselines3's convention (its policies act in [-1, 1]); the fine-tuned models use it.
    """
    action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    return low + (action + 1.0) * 0.5 * (high - low)


@dataclasses.dataclass(frozen=True)
class ActionMap:
    """Map from a policy's actions to an env's action box, clipped to it.

    ``kind`` says what the policy's actions mean (:data:`ACTION_MAP_KINDS`); the three
    conventions round differently, so each keeps its own arithmetic:

    - ``normalized`` (the Gaussian MLP policies of every method but fine-tuning):
      ``env_action = clip(offset + scale * action, low, high)`` per dimension, with
      ``offset`` the box's centre and ``scale`` its half-width; unbounded dimensions pass
      through unchanged (offset 0, scale 1, no clipping). Same dtype as the action.
    - ``clip_then_rescale`` (stable-baselines3's models, fine-tuning):
      :func:`clip_then_rescale`, float64; the box must be bounded.
    - ``env_units`` (actions already in the env's units: task identification's
      behaviours): ``clip(action, low, high)`` in float64.

    Clipping here, before the env sees the action, is what rllab's ``normalize``
    wrapper (the MAML paper's) and stable-baselines3 do: a Gaussian policy's
    samples overshoot the box, and envs that charge a control cost on the
    commanded action (gymnasium's MuJoCo robots) would otherwise charge for
    the part of the noise the actuators never apply. Episodes keep the
    policy's unclipped sample, so log-probabilities stay those of the policy.
    """

    offset: np.ndarray  # [act_dim]
    scale: np.ndarray  # [act_dim]
    low: np.ndarray  # [act_dim], -inf where unbounded
    high: np.ndarray  # [act_dim], +inf where unbounded
    kind: str = "normalized"

    def __post_init__(self) -> None:
        if self.kind not in ACTION_MAP_KINDS:
            raise ValueError(f"ActionMap kind must be one of {', '.join(ACTION_MAP_KINDS)}, got {self.kind!r}")

    @classmethod
    def from_space(cls, space: Any, kind: str = "normalized") -> ActionMap:
        """The map for a gymnasium ``Box`` action space (single, not batched)."""
        low = np.asarray(space.low, dtype=np.float64).reshape(-1)
        high = np.asarray(space.high, dtype=np.float64).reshape(-1)
        bounded = np.isfinite(low) & np.isfinite(high)
        if kind == "clip_then_rescale" and not bounded.all():
            raise ValueError(f"ActionMap kind 'clip_then_rescale' needs a bounded box, got low={low}, high={high}")
        # Only bounded dimensions enter the arithmetic: -inf + inf would be nan (and warn).
        bounded_low, bounded_high = np.where(bounded, low, 0.0), np.where(bounded, high, 0.0)
        offset = np.where(bounded, (bounded_high + bounded_low) / 2.0, 0.0)
        scale = np.where(bounded, (bounded_high - bounded_low) / 2.0, 1.0)
        if kind == "normalized":
            low, high = np.where(bounded, low, -np.inf), np.where(bounded, high, np.inf)
        return cls(offset, scale, low, high, kind)

    @functools.cached_property
    def is_identity(self) -> bool:
        """True for ``normalized`` maps of boxes that are already [-1, 1] (the locomotion robots): clipping only."""
        return bool(self.kind == "normalized" and np.all(self.offset == 0.0) and np.all(self.scale == 1.0))

    def __call__(self, action: np.ndarray) -> np.ndarray:
        """Env actions ``[..., act_dim]`` (a new array) for policy actions ``[..., act_dim]``.

        Called once per env step by the rollout loop: no per-call casts of the bounds.
        """
        if self.kind == "clip_then_rescale":
            return clip_then_rescale(action, self.low, self.high)
        if self.kind == "env_units":
            return np.clip(np.asarray(action, dtype=np.float64), self.low, self.high)
        mapped = action if self.is_identity else self.offset + self.scale * action
        return np.clip(mapped, self.low, self.high, out=np.empty_like(action))
