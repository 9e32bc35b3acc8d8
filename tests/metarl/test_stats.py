"""metarl.evaluation.stats: IQM and stratified-bootstrap intervals on inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from metarl.evaluation.stats import interquartile_mean, summarize


def test_iqm_matches_hand_computed_values() -> None:
    # 8 values: cut int(0.25 * 8) = 2 from each end -> mean(3, 4, 5, 6) = 4.5
    assert interquartile_mean(np.array([8.0, 1, 7, 2, 6, 3, 5, 4])) == pytest.approx(4.5)
    # 5 values: cut 1 from each end -> mean(2, 3, 4) = 3, the outlier 100 is ignored
    assert interquartile_mean(np.array([1.0, 2, 3, 4, 100])) == pytest.approx(3.0)
    # per-column over the first axis
    cols = np.array([[1.0, 10], [2, 20], [3, 30], [400, 40]])  # [4, 2]
    np.testing.assert_allclose(interquartile_mean(cols, axis=0), [2.5, 25.0])


def test_summarize_one_run_mean_and_iqm_per_k() -> None:
    returns = np.array(  # [tasks=4, K=2]
        [[1.0, -5.0], [2.0, 0.0], [3.0, 1.0], [100.0, 2.0]]
    )
    summary = summarize(returns, reps=200)
    assert summary["mean"] == pytest.approx([26.5, -0.5])
    assert summary["iqm"] == pytest.approx([2.5, 0.5])
    assert len(summary["ci95"]) == 2 and len(summary["mean_ci95"]) == 2
    for (lo, hi), point in zip(summary["ci95"], summary["iqm"], strict=True):
        assert lo <= point <= hi


def test_iqm_interval_is_robust_to_an_outlier_task() -> None:
    returns = np.arange(20, dtype=np.float64)[:, None]  # [tasks=20, K=1]
    returns[7, 0] = 1000.0  # one task where the policy "explodes"
    summary = summarize(returns, reps=500)
    (mean_lo, mean_hi), (iqm_lo, iqm_hi) = summary["mean_ci95"][0], summary["ci95"][0]
    assert mean_hi - mean_lo > 10 * (iqm_hi - iqm_lo)


def test_ci_of_a_constant_is_a_point() -> None:
    summary = summarize(np.full((3, 12, 4), -7.25), reps=100)  # [runs, tasks, K]
    assert summary["mean"] == [-7.25] * 4
    assert summary["ci95"] == [[-7.25, -7.25]] * 4
    assert summary["mean_ci95"] == [[-7.25, -7.25]] * 4


def test_interval_matches_normal_theory_and_covers_the_true_mean() -> None:
    rng = np.random.default_rng(123)
    num_trials, num_tasks, true_mean, sd = 40, 40, 2.0, 3.0
    covered = 0
    width_ratios = []
    for trial in range(num_trials):
        returns = rng.normal(true_mean, sd, size=(num_tasks, 1))
        lo, hi = summarize(returns, seed=trial, reps=250)["mean_ci95"][0]
        covered += lo <= true_mean <= hi
        normal_width = 2 * 1.96 * returns.std(ddof=1) / np.sqrt(num_tasks)
        width_ratios.append((hi - lo) / normal_width)
    coverage = covered / num_trials
    assert 0.8 <= coverage, coverage  # nominal 0.95; percentile bootstrap runs a bit under
    assert 0.85 < float(np.mean(width_ratios)) < 1.1, np.mean(width_ratios)


def test_bootstrap_resamples_tasks_and_runs() -> None:
    # Every run scores the same on a task, but tasks differ: a bootstrap over runs
    # alone would give a point; resampling tasks gives a real interval.
    per_task = np.arange(10, dtype=np.float64)  # [tasks]
    returns = np.broadcast_to(per_task[None, :, None], (5, 10, 1))  # [runs, tasks, K]
    lo, hi = summarize(returns, reps=500)["mean_ci95"][0]
    assert lo < 4.5 - 0.8 and hi > 4.5 + 0.8
    # Tasks identical, runs differ: the spread between seeds shows up too.
    per_run = np.arange(5, dtype=np.float64)
    returns = np.broadcast_to(per_run[:, None, None], (5, 10, 1))
    lo, hi = summarize(returns, reps=500)["mean_ci95"][0]
    assert lo < 2.0 < hi and hi - lo > 0.3


def test_seed_makes_it_reproducible_and_leaves_global_rng_alone() -> None:
    returns = np.random.default_rng(0).normal(size=(20, 3))
    np.random.seed(99)
    expected_next = np.random.random()
    np.random.seed(99)
    first = summarize(returns, seed=5, reps=200)
    assert np.random.random() == expected_next  # caller's global stream untouched
    assert summarize(returns, seed=5, reps=200) == first
    assert summarize(returns, seed=6, reps=200)["ci95"] != first["ci95"]


@pytest.mark.parametrize(
    ("returns", "message"),
    [
        (np.zeros(5), r"\[tasks, K\]"),
        (np.zeros((2, 3, 4, 5)), r"\[tasks, K\]"),
        (np.zeros((0, 4)), "non-empty"),
        (np.array([[1.0, np.nan]]), "finite"),
    ],
)
def test_bad_inputs_are_rejected(returns: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        summarize(returns)


def test_iqm_matches_scipy_trim_mean() -> None:
    trim_mean = pytest.importorskip("scipy.stats").trim_mean
    scores = np.random.default_rng(3).normal(size=(7, 13, 3))  # [runs, tasks, K]
    for count in (1, 2, 3, 4, 5, 9, 91):
        flat = scores.reshape(-1)[:count]
        assert interquartile_mean(flat) == pytest.approx(trim_mean(flat, 0.25))
    np.testing.assert_allclose(
        interquartile_mean(scores, axis=(0, 1)),
        trim_mean(scores.reshape(-1, 3), 0.25, axis=0),
    )


@pytest.mark.parametrize("shape", [(1, 40, 3), (5, 30, 2)])
def test_intervals_agree_with_rliable(shape: tuple[int, int, int]) -> None:
    """Same scheme as rliable's stratified task bootstrap: the endpoints agree up to
    Monte Carlo noise (both with many replicates, different random draws)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        library = pytest.importorskip("rliable.library")
        metrics = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(11)
    # Skewed scores with an outlier, so that mean and IQM intervals differ clearly.
    scores = rng.gamma(2.0, 10.0, size=shape) - 30.0 * np.arange(shape[2])  # [runs, tasks, K]
    scores[0, 0, :] += 400.0
    reps = 6_000
    ours = summarize(scores, seed=1, reps=reps)

    def aggregate(sample: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [sample.mean(axis=(0, 1)), np.array([metrics.aggregate_iqm(sample[..., k]) for k in range(shape[2])])]
        )

    np.random.seed(2)  # rliable 1.2 draws from the global RNG
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, intervals = library.get_interval_estimates(
            {"x": scores}, aggregate, method="percentile", task_bootstrap=True, reps=reps
        )
    theirs = np.asarray(intervals["x"])  # [2, 2K]
    num_steps = shape[2]
    for k in range(num_steps):
        for ours_interval, column in ((ours["mean_ci95"][k], k), (ours["ci95"][k], num_steps + k)):
            width = theirs[1, column] - theirs[0, column]
            assert width > 0
            np.testing.assert_allclose(ours_interval, theirs[:, column], atol=0.06 * width)


def test_paired_gains_need_two_k_values_and_count_improved_pairs() -> None:
    from metarl.evaluation.stats import paired_gains

    with pytest.raises(ValueError, match="K >= 2"):
        paired_gains(np.zeros((4, 1)))
    returns = np.array([[0.0, 1.0, -1.0], [2.0, 2.0, 5.0], [1.0, 4.0, 4.0], [0.0, -3.0, 1.0]])  # [tasks, K]
    gains = paired_gains(returns, reps=500)
    assert gains["mean"] == pytest.approx([(1 + 0 + 3 - 3) / 4, (-1 + 3 + 3 + 1) / 4])
    assert gains["improved"] == pytest.approx([0.5, 0.75])  # a pair with no change does not count
