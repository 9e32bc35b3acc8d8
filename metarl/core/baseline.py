"""Linear feature baseline, fitted per task by regularised least squares.

The value of a state is predicted as a linear function of the features
``[o, o^2, t, t^2, t^3, 1]`` where ``o`` is the observation clipped to
[-10, 10] and ``t`` the time step divided by 100 (rllab's
``LinearFeatureBaseline``, used by MAML and ProMP). For a meta-batch, one
coefficient vector is fitted per task on that task's episodes, all tasks at
once: the normal equations ``(X^T X + c I) w = X^T R`` form a batch
``[tasks, F, F]`` solved by one batched Cholesky factorisation. Padding steps
get zero weight. The solve runs in float64 (the cubic time features make the
system badly conditioned in float32) and the regulariser ``c`` grows tenfold,
per task, up to four times if a system is still not positive definite,
as rllab does.

References: Duan et al. 2016, "Benchmarking Deep Reinforcement Learning for
Continuous Control" (rllab), linear feature baseline.
"""

from __future__ import annotations

import torch

from metarl.core.episodes import Episodes
from metarl.core.returns import discounted_returns

OBS_CLIP = 10.0
TIME_SCALE = 100.0
REG_ATTEMPTS = 5


def baseline_features(observations: torch.Tensor) -> torch.Tensor:
    """Features ``[o, o^2, t, t^2, t^3, 1]`` of every step.

    Args:
        observations: ``[..., H, obs_dim]``.

    Returns:
        ``[..., H, 2 * obs_dim + 4]``.
    """
    obs = observations.clamp(-OBS_CLIP, OBS_CLIP)
    horizon = obs.shape[-2]
    time = torch.arange(horizon, dtype=obs.dtype, device=obs.device) / TIME_SCALE  # [H]
    time = time.reshape(horizon, 1).expand(*obs.shape[:-1], 1)  # [..., H, 1]
    return torch.cat(
        [obs, obs.pow(2), time, time.pow(2), time.pow(3), torch.ones_like(time)], dim=-1
    )


def fit_linear(
    features: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, reg_coeff: float
) -> torch.Tensor:
    """Weighted ridge regression per batch row: ``argmin_w sum_n weights_n (x_n w - y_n)^2 + c |w|^2``.

    Args:
        features: ``[B, N, F]``.
        targets: ``[B, N]``.
        weights: ``[B, N]`` (0 drops a row).
        reg_coeff: initial ``c``; multiplied by 10 (per row of the batch) until
            the system is positive definite, at most ``REG_ATTEMPTS`` times.

    Returns:
        ``[B, F]`` coefficients (dtype of ``features``).

    Raises:
        ValueError: if a system stays singular (non-finite inputs).
    """
    x = features.double()
    weighted_x = x * weights.double().unsqueeze(-1)  # [B, N, F]
    gram = weighted_x.transpose(-1, -2) @ x  # [B, F, F]
    rhs = weighted_x.transpose(-1, -2) @ targets.double().unsqueeze(-1)  # [B, F, 1]
    num_features = x.shape[-1]
    eye = torch.eye(num_features, dtype=torch.float64, device=x.device)
    reg = torch.full((x.shape[0], 1, 1), reg_coeff, dtype=torch.float64, device=x.device)
    for _ in range(REG_ATTEMPTS):
        chol, info = torch.linalg.cholesky_ex(gram + reg * eye)
        failed = info != 0  # [B]
        if not bool(failed.any()):
            return torch.cholesky_solve(rhs, chol).squeeze(-1).to(features.dtype)
        reg = torch.where(failed.reshape(-1, 1, 1), reg * 10.0, reg)
    raise ValueError(
        "linear baseline: the least-squares system stays singular for tasks "
        f"{failed.nonzero().flatten().tolist()} even with regulariser {float(reg.max()):.1e}; "
        "the episodes probably contain NaN or inf observations or returns"
    )


class LinearFeatureBaseline:
    """Per-task linear value baseline (see the module docstring).

    Args:
        reg_coeff: ridge regulariser of the least-squares fit (rllab: 1e-5).
    """

    def __init__(self, reg_coeff: float = 1e-5) -> None:
        if not reg_coeff > 0:
            raise ValueError(f"reg_coeff must be > 0, got {reg_coeff}")
        self.reg_coeff = reg_coeff

    def fit_predict(self, episodes: Episodes, discount: float) -> torch.Tensor:
        """Fit one baseline per task to its discounted returns and predict every step.

        Args:
            episodes: the meta-batch (``[tasks, episodes, H, ...]``).
            discount: γ of the returns the baseline regresses on.

        Returns:
            ``[tasks, episodes, H]`` predicted values, 0 on padding.
        """
        returns = discounted_returns(episodes.rewards, episodes.mask, discount)  # [T, E, H]
        features = baseline_features(episodes.observations.double())  # [T, E, H, F]
        t, e, h, f = features.shape
        coeffs = fit_linear(
            features.reshape(t, e * h, f),
            returns.reshape(t, e * h),
            episodes.mask.reshape(t, e * h),
            self.reg_coeff,
        )  # [T, F]
        values = (features @ coeffs.reshape(t, 1, f, 1)).squeeze(-1)  # [T, E, H]
        return values.to(episodes.rewards.dtype) * episodes.mask
