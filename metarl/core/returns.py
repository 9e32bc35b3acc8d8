"""Discounted returns, generalised advantage estimation and advantage normalisation.

All functions work on padded batches: the last dimension is time (the
horizon ``H``), any leading dimensions (``[tasks, episodes]``) are batch, and
``mask`` is 1.0 on steps that were taken and 0.0 on the padding after an
episode ended (see :mod:`metarl.core.episodes`). Outputs are zero on padding, and
nothing after an episode's last step leaks into its values: an episode that
ended (terminated or reached the horizon) bootstraps with 0, as in rllab and
the MAML/ProMP code.

The recursions ``R_t = r_t + γ R_{t+1}`` are written as one matrix product
with the upper-triangular matrix ``D[i, j] = γ^(j-i)`` (``j >= i``), so that a
whole meta-batch is processed in one batched operation instead of a Python
loop over time (``H <= a few hundred``, so the ``H x H`` matrix is small).

References: Schulman et al. 2016, "High-Dimensional Continuous Control Using
Generalized Advantage Estimation".
"""

from __future__ import annotations

import torch


def _check_shapes(name: str, tensor: torch.Tensor, mask: torch.Tensor) -> None:
    if tensor.shape != mask.shape:
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)} but mask has shape {tuple(mask.shape)}; they must match"
        )


def _check_factor(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def discount_matrix(
    horizon: int, factor: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Upper-triangular ``D[i, j] = factor^(j - i)`` for ``j >= i``, else 0  # [H, H].

    ``x @ D.T`` computes ``y_i = sum_{j >= i} factor^(j-i) x_j`` along the last dim.
    """
    steps = torch.arange(horizon, device=device, dtype=torch.float64)
    exponent = steps.unsqueeze(0) - steps.unsqueeze(1)  # [H, H], j - i
    upper = exponent >= 0
    matrix = torch.where(
        upper,
        torch.pow(torch.tensor(factor, dtype=torch.float64, device=device), exponent.clamp(min=0)),
        0.0,
    )
    return matrix.to(dtype)


def discounted_sum(values: torch.Tensor, factor: float) -> torch.Tensor:
    """``y_t = sum_{l >= 0} factor^l x_{t+l}`` along the last dim (no masking)  # [..., H]."""
    matrix = discount_matrix(values.shape[-1], factor, values.dtype, values.device)
    return values @ matrix.T


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, discount: float) -> torch.Tensor:
    """Reward-to-go ``R_t = sum_{l >= 0} γ^l r_{t+l}`` within each episode.

    Args:
        rewards: ``[..., H]`` rewards (anything on padding is ignored).
        mask: ``[..., H]`` 1.0 on taken steps, 0.0 on padding.
        discount: γ in [0, 1].

    Returns:
        ``[..., H]`` discounted returns, 0 on padding.
    """
    _check_shapes("rewards", rewards, mask)
    _check_factor("discount", discount)
    return discounted_sum(rewards * mask, discount) * mask


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    discount: float,
    gae_lambda: float,
) -> torch.Tensor:
    """Generalised advantage estimates ``A_t = sum_l (γλ)^l δ_{t+l}``.

    ``δ_t = r_t + γ V_{t+1} - V_t`` with ``V_{t+1} = 0`` after an episode's last
    step (``mask_{t+1} = 0``) and after the horizon. With ``gae_lambda = 1``
    this is ``discounted_returns - values``.

    Args:
        rewards: ``[..., H]``.
        values: ``[..., H]`` baseline predictions ``V(s_t)``.
        mask: ``[..., H]`` 1.0 on taken steps, 0.0 on padding.
        discount: γ in [0, 1].
        gae_lambda: λ in [0, 1].

    Returns:
        ``[..., H]`` advantages, 0 on padding.
    """
    _check_shapes("rewards", rewards, mask)
    _check_shapes("values", values, mask)
    _check_factor("discount", discount)
    _check_factor("gae_lambda", gae_lambda)
    values = values * mask
    next_values = torch.nn.functional.pad(
        values[..., 1:], (0, 1)
    )  # [..., H], V_{t+1}, 0 after the horizon
    deltas = (rewards + discount * next_values - values) * mask
    return discounted_sum(deltas, discount * gae_lambda) * mask


def normalize_advantages(
    advantages: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Centre and scale advantages to mean 0, std 1 over the taken steps of each task.

    Statistics are taken over all dimensions after the first (``[tasks, episodes,
    time]`` -> one mean and std per task), as rllab's ``center_adv`` does per
    task in MAML and ProMP.

    Args:
        advantages: ``[tasks, ..., H]``.
        mask: same shape, 1.0 on taken steps.
        eps: added to the std.

    Returns:
        ``[tasks, ..., H]`` normalised advantages, 0 on padding.
    """
    _check_shapes("advantages", advantages, mask)
    dims = tuple(range(1, advantages.dim()))
    count = mask.sum(dim=dims, keepdim=True).clamp(min=1.0)
    mean = (advantages * mask).sum(dim=dims, keepdim=True) / count
    var = ((advantages - mean).pow(2) * mask).sum(dim=dims, keepdim=True) / count
    return (advantages - mean) / (var.sqrt() + eps) * mask
