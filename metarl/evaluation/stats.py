"""Aggregate statistics for evaluation returns: mean, interquartile mean, bootstrap CIs.

Every method is evaluated on the same protocol (docs/design.md, "Evaluation protocol"): for each of N unseen
tasks, the return before adaptation (k = 0) and after each of k = 1..K-1 adaptation
steps. One run therefore yields a ``[tasks, K]`` array, several seeds a
``[runs, tasks, K]`` array. :func:`summarize` turns either into the aggregate block of
the ``eval_<split>.json`` schema (docs/design.md, "Run files").

Choices:
- The interquartile mean (IQM) is the 25%-trimmed mean over all (run, task) scores,
  as rliable's ``metrics.aggregate_iqm``: robust to the few tasks where a policy
  falls over, yet less noisy than the median.
- Confidence intervals are a stratified percentile bootstrap over tasks and runs,
  the scheme of rliable's ``StratifiedBootstrap`` with ``task_bootstrap=True``: each
  replicate resamples the evaluation tasks with replacement and, within each task,
  the runs (seeds) with replacement. Unseen tasks are random draws from a
  distribution, so they must be resampled too; with a single run this reduces to an
  ordinary bootstrap over tasks. The same resampled tasks and runs are used for
  every k, so the bands of one curve are consistent (rliable redraws the runs per k;
  the interval of each k has the same distribution either way, and a test checks
  the intervals against rliable's).
- ``ci95`` is the interval of the IQM (rliable's recommended aggregate);
  ``mean_ci95`` is the interval of the mean, for tables compared with papers that
  report means (MAML, Finn et al. 2017).
- All replicates are drawn at once from a ``np.random.Generator`` seeded with
  ``seed``: the result is a function of the inputs and ``seed`` alone, and numpy's
  global RNG is never touched.

References: Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of the
Statistical Precipice" (rliable); Efron & Tibshirani 1993, "An Introduction to the
Bootstrap" (percentile intervals).
"""

from __future__ import annotations

import numpy as np

__all__ = ["interquartile_mean", "paired_gains", "stratified_bootstrap", "summarize"]


def _trimmed_mean_last_axis(scores: np.ndarray) -> np.ndarray:
    """25%-trimmed mean over the last axis: ``int(0.25 * n)`` scores cut from each end."""
    count = scores.shape[-1]
    cut = int(0.25 * count)
    ordered = np.sort(scores, axis=-1)
    return ordered[..., cut : count - cut].mean(axis=-1)


def interquartile_mean(scores: np.ndarray, axis: int | tuple[int, ...] | None = None) -> np.ndarray:
    """25%-trimmed mean (the mean of the middle half of the sorted scores).

    Same definition as ``scipy.stats.trim_mean(scores, 0.25)`` and rliable's
    ``aggregate_iqm``: ``int(0.25 * n)`` scores are cut from each end.

    Args:
        scores: Any array of finite scores.
        axis: Axes to aggregate over; ``None`` aggregates over all entries.

    Returns:
        The IQM with the aggregated axes removed.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if axis is None:
        return np.asarray(_trimmed_mean_last_axis(scores.reshape(-1)))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = tuple(a % scores.ndim for a in axes)
    kept = [a for a in range(scores.ndim) if a not in axes]
    moved = np.transpose(scores, kept + list(axes))  # [kept..., aggregated...]
    flat = moved.reshape(*[scores.shape[a] for a in kept], -1)
    return np.asarray(_trimmed_mean_last_axis(flat))


def stratified_bootstrap(
    scores: np.ndarray, reps: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap replicates of ``[runs, tasks, K]`` scores, tasks and runs resampled.

    Each replicate draws ``tasks`` task indices with replacement and, for every drawn
    task slot, ``runs`` run indices with replacement; the K columns of a drawn
    (run, task) cell stay together.

    Args:
        scores: ``[runs, tasks, K]`` array.
        reps: Number of replicates.
        rng: Source of the resampling indices.

    Returns:
        ``[reps, runs, tasks, K]`` resampled scores.
    """
    num_runs, num_tasks, _ = scores.shape
    task_index = rng.integers(num_tasks, size=(reps, 1, num_tasks))  # [reps, 1, tasks]
    run_index = rng.integers(num_runs, size=(reps, num_runs, num_tasks))  # [reps, runs, tasks]
    return scores[run_index, task_index]  # [reps, runs, tasks, K]


def summarize(
    returns: np.ndarray, seed: int = 0, reps: int = 2000, confidence: float = 0.95
) -> dict[str, list]:
    """Mean, interquartile mean and stratified-bootstrap confidence intervals per k.

    Args:
        returns: Per-task returns, ``[tasks, K]`` for one run or ``[runs, tasks, K]``
            for several seeds evaluated on the same tasks. K indexes the number of
            adaptation steps (k = 0, 1, ...). Must be finite.
        seed: Seed of the bootstrap; the same inputs and seed give the same intervals.
        reps: Bootstrap replicates (rliable's default is 50000; 2000 keeps the
            percentile endpoints stable to about 1% of the spread and takes ~0.3 s).
        confidence: Coverage of the interval, in (0, 1).

    Returns:
        ``{"mean": [K floats], "iqm": [K floats], "ci95": [[lo, hi] * K] (IQM),
        "mean_ci95": [[lo, hi] * K] (mean)}``, plain Python floats for JSON.

    Raises:
        ValueError: wrong number of dimensions, an empty axis, non-finite values,
            ``reps < 1`` or ``confidence`` outside (0, 1).
    """
    scores = np.asarray(returns, dtype=np.float64)
    if scores.ndim == 2:
        scores = scores[None]  # [runs=1, tasks, K]
    if scores.ndim != 3:
        raise ValueError(
            f"returns must have shape [tasks, K] or [runs, tasks, K]; got shape {np.shape(returns)}"
        )
    if 0 in scores.shape:
        raise ValueError(f"returns must be non-empty on every axis; got shape {np.shape(returns)}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("returns must be finite; found NaN or inf (check sim_unstable episodes)")
    if reps < 1:
        raise ValueError(f"reps must be >= 1; got {reps}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")

    mean = scores.mean(axis=(0, 1))  # [K]
    iqm = interquartile_mean(scores, axis=(0, 1))  # [K]
    rng = np.random.default_rng(seed)
    # Replicates in chunks, so that memory stays bounded for many runs and tasks.
    chunk = max(1, 2_000_000 // scores.size)
    mean_reps, iqm_reps = [], []
    for start in range(0, reps, chunk):
        sample = stratified_bootstrap(scores, min(chunk, reps - start), rng)  # [r, runs, tasks, K]
        mean_reps.append(sample.mean(axis=(1, 2)))  # [r, K]
        iqm_reps.append(interquartile_mean(sample, axis=(1, 2)))  # [r, K]
    tail = 100.0 * (1.0 - confidence) / 2.0
    mean_lo, mean_hi = np.percentile(np.concatenate(mean_reps), [tail, 100.0 - tail], axis=0)  # [K] each
    iqm_lo, iqm_hi = np.percentile(np.concatenate(iqm_reps), [tail, 100.0 - tail], axis=0)  # [K] each
    return {
        "mean": [float(v) for v in mean],
        "iqm": [float(v) for v in iqm],
        "ci95": [[float(lo), float(hi)] for lo, hi in zip(iqm_lo, iqm_hi, strict=True)],
        "mean_ci95": [[float(lo), float(hi)] for lo, hi in zip(mean_lo, mean_hi, strict=True)],
    }


def paired_gains(returns: np.ndarray, seed: int = 0, reps: int = 2000, confidence: float = 0.95) -> dict[str, list]:
    """What each adaptation step gains over k = 0, paired per task (and per seed).

    The return after k steps and the one before are measured on the same task by
    the same run, so their difference per (run, task) is far less noisy than the
    difference of two means: a step that helps a little on every task shows up
    even when the tasks' returns spread widely. The interval is the stratified
    bootstrap of :func:`summarize` applied to the differences.

    Args:
        returns: ``[tasks, K]`` or ``[runs, tasks, K]`` per-task returns (K >= 2), as in :func:`summarize`.
        seed, reps, confidence: as in :func:`summarize`.

    Returns:
        ``{"mean": [K-1 floats], "mean_ci95": [[lo, hi] * (K-1)], "improved": [K-1 floats]}``
        for k = 1..K-1: the mean gain ``return[k] - return[0]`` over runs and tasks, its
        interval, and the share of (run, task) pairs whose return rose.

    Raises:
        ValueError: as :func:`summarize`, or fewer than two k values.
    """
    scores = np.asarray(returns, dtype=np.float64)
    if scores.ndim == 2:
        scores = scores[None]
    if scores.ndim != 3 or scores.shape[-1] < 2:
        raise ValueError(f"paired gains need returns of shape [runs, tasks, K] with K >= 2; got {np.shape(returns)}")
    gains = scores[..., 1:] - scores[..., :1]  # [runs, tasks, K-1]
    summary = summarize(gains, seed=seed, reps=reps, confidence=confidence)
    return {
        "mean": summary["mean"],
        "mean_ci95": summary["mean_ci95"],
        "improved": [float(v) for v in (gains > 0).mean(axis=(0, 1))],
    }
