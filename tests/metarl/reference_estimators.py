"""Independent references for the estimators: plain Python loops and numpy's lstsq.

Written from the definitions in the docstrings of :mod:`metarl.core.returns` and
:mod:`metarl.core.baseline`, sharing no code with them, so that a test comparing the
two can fail when either drifts.
"""

from __future__ import annotations

import numpy as np


def episode_lengths(mask: np.ndarray) -> np.ndarray:
    """Number of taken steps of each episode, ``mask [..., H] -> [...]`` (steps are a prefix)."""
    return mask.sum(axis=-1).astype(int)


def returns_loop(rewards: list[float], discount: float) -> list[float]:
    """``R_t = r_t + γ R_{t+1}`` backwards over one episode's taken steps."""
    out, running = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + discount * running
        out[t] = running
    return out


def gae_loop(rewards: list[float], values: list[float], discount: float, lam: float) -> list[float]:
    """GAE over one episode's taken steps; the value after the last step is 0."""
    out, running = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(rewards) else 0.0
        delta = rewards[t] + discount * next_value - values[t]
        running = delta + discount * lam * running
        out[t] = running
    return out


def padded_apply(fn, mask: np.ndarray, *arrays: np.ndarray) -> np.ndarray:
    """Apply ``fn(*per-episode lists) -> list`` to every episode's taken steps; 0 on padding."""
    out = np.zeros(mask.shape)
    lengths = episode_lengths(mask)
    for index in np.ndindex(mask.shape[:-1]):
        n = lengths[index]
        out[index][:n] = fn(*[list(map(float, a[index][:n])) for a in arrays])
    return out


def features_of_episode(observations: np.ndarray) -> np.ndarray:
    """rllab's features of one episode ``[n, obs_dim] -> [n, 2 obs_dim + 4]``:
    clipped o, its square, t/100, (t/100)^2, (t/100)^3 and 1."""
    rows = []
    for t, obs in enumerate(observations):
        o = np.clip(obs, -10.0, 10.0)
        time = t / 100.0
        rows.append(np.concatenate([o, o * o, [time, time**2, time**3, 1.0]]))
    return np.array(rows)


def linear_baseline_values(observations: np.ndarray, rewards: np.ndarray, mask: np.ndarray,
                           discount: float, reg_coeff: float) -> np.ndarray:
    """Per task: ridge fit on the taken steps only, ``min |X w - R|^2 + c |w|^2``, solved with
    ``lstsq`` on ``[X; sqrt(c) I] w = [R; 0]``; values predicted on taken steps, 0 on padding.

    Args: observations ``[T, E, H, obs]``, rewards and mask ``[T, E, H]``.
    """
    values = np.zeros(mask.shape)
    lengths = episode_lengths(mask)
    for task in range(mask.shape[0]):
        rows, targets = [], []
        for episode in range(mask.shape[1]):
            n = lengths[task, episode]
            rows.append(features_of_episode(observations[task, episode, :n]))
            targets += returns_loop(list(rewards[task, episode, :n]), discount)
        x = np.concatenate(rows)
        f = x.shape[1]
        augmented = np.concatenate([x, np.sqrt(reg_coeff) * np.eye(f)])
        coeffs = np.linalg.lstsq(augmented, np.concatenate([targets, np.zeros(f)]), rcond=None)[0]
        for episode in range(mask.shape[1]):
            n = lengths[task, episode]
            values[task, episode, :n] = features_of_episode(observations[task, episode, :n]) @ coeffs
    return values


def normalize_per_task(advantages: np.ndarray, mask: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Per task, over its taken steps: (a - mean) / (population std + eps); 0 on padding."""
    out = np.zeros(mask.shape)
    for task in range(mask.shape[0]):
        taken = advantages[task][mask[task] > 0]
        mean, std = taken.mean(), taken.std()
        out[task] = np.where(mask[task] > 0, (advantages[task] - mean) / (std + eps), 0.0)
    return out
