"""Aggregate statistics for evaluation returns: mean, interquartile mean, bootstrap CIs.

Every method is evaluated on the same protocol (DESIGN.md §6): for each of N unseen
tasks, the return before adaptation (k = 0) and after each of k = 1..K-1 adaptation
steps. One run therefore yields a ``[tasks, K]`` array, several seeds a
``[runs, tasks, K]`` array. :func:`summarize` turns either into the aggregate block of
the ``eval_<split>.json`` schema (DESIGN.md §7).

Choices:
- The interquartile mean (IQM) is the 25%-trimmed mean over all (run, task) scores,
  as rliable's ``metrics.aggregate_iqm``: robust to the few tasks where a policy
  falls over, yet less noisy than the median.
- Confidence intervals are rliable's stratified percentile bootstrap with
  ``task_bootstrap=True``: each replicate resamples the evaluation tasks with
  replacement and, within each task, the runs (seeds) with replacement. Unseen
  tasks are random draws from a distribution, so they must be resampled too; with a
  single run this reduces to an ordinary bootstrap over tasks. The same resampled
  tasks are used for every k, so the bands of one curve are consistent.
- ``ci95`` is the interval of the IQM (rliable's recommended aggregate);
  ``mean_ci95`` is the interval of the mean, for tables compared with papers that
  report means (MAML, Finn et al. 2017).
- rliable 1.2 draws its bootstrap indices from numpy's *global* RNG
  (``StratifiedBootstrap.update_indices`` calls ``np.random.choice``) and ignores its
  ``random_state`` argument there. To make results a function of ``seed`` alone, the
  global state is seeded for the duration of the call and restored afterwards, so
  callers' global RNG streams are not disturbed.
- Working versions: rliable 1.2 needs ``arch<8`` (arch 8 removed the
  ``random_state`` keyword rliable passes) and ``arch`` 7.x needs ``pandas<3``
  (pandas 3 changed ``pandas.util._decorators.deprecate_kwarg``). pyproject.toml pins
  that combination.

References: Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of the
Statistical Precipice" (rliable).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

__all__ = ["interquartile_mean", "summarize"]


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
    from scipy.stats import trim_mean

    scores = np.asarray(scores, dtype=np.float64)
    if axis is None:
        return np.asarray(trim_mean(scores.reshape(-1), proportiontocut=0.25))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = tuple(a % scores.ndim for a in axes)
    kept = [a for a in range(scores.ndim) if a not in axes]
    moved = np.transpose(scores, kept + list(axes))  # [kept..., aggregated...]
    flat = moved.reshape(*[scores.shape[a] for a in kept], -1)
    return np.asarray(trim_mean(flat, proportiontocut=0.25, axis=-1))


@contextmanager
def _seeded_global_numpy_rng(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG for the block and restore the caller's state after."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def _import_rliable():  # noqa: ANN202 - returns a module
    """Import rliable's library module, explaining the known version conflict on failure."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from rliable import library
    except Exception as error:  # ImportError, or TypeError raised inside arch on import
        raise ImportError(
            "metarl.stats needs rliable (pip install 'rliable>=1.2' 'arch>=7,<8' 'pandas>=2,<3'); "
            f"importing it failed with {type(error).__name__}: {error}. arch 7.x does not import "
            "under pandas 3, and arch 8 removed the random_state keyword that rliable 1.2 passes."
        ) from error
    return library


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

    num_steps = scores.shape[2]

    def mean_and_iqm(sample: np.ndarray) -> np.ndarray:
        """[runs, tasks, K] -> [2K]: mean per k then IQM per k."""
        return np.concatenate([sample.mean(axis=(0, 1)), interquartile_mean(sample, axis=(0, 1))])

    library = _import_rliable()
    with _seeded_global_numpy_rng(seed), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arch's random_state deprecation notice
        points, intervals = library.get_interval_estimates(
            {"returns": scores},
            mean_and_iqm,
            method="percentile",
            task_bootstrap=True,
            reps=reps,
            confidence_interval_size=confidence,
        )
    point = points["returns"]  # [2K]
    interval = np.asarray(intervals["returns"])  # [2, 2K]: lower row, upper row
    mean, iqm = point[:num_steps], point[num_steps:]
    lower, upper = interval[0], interval[1]  # [2K] each
    mean_lo, mean_hi = lower[:num_steps], upper[:num_steps]
    iqm_lo, iqm_hi = lower[num_steps:], upper[num_steps:]
    return {
        "mean": [float(v) for v in mean],
        "iqm": [float(v) for v in iqm],
        "ci95": [[float(lo), float(hi)] for lo, hi in zip(iqm_lo, iqm_hi, strict=True)],
        "mean_ci95": [[float(lo), float(hi)] for lo, hi in zip(mean_lo, mean_hi, strict=True)],
    }
