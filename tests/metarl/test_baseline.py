"""The linear feature baseline recovers linear functions of its features, per task."""

import torch

from metarl.core.baseline import LinearFeatureBaseline, baseline_features, fit_linear
from metarl.core.episodes import Episodes
from metarl.core.returns import discounted_returns


def test_features_layout():
    obs = torch.tensor([[[2.0, -3.0], [20.0, 0.5]]])  # [1, H=2, 2]
    features = baseline_features(obs)
    assert features.shape == (1, 2, 8)
    torch.testing.assert_close(
        features[0, 1], torch.tensor([10.0, 0.5, 100.0, 0.25, 0.01, 1e-4, 1e-6, 1.0])
    )


def test_fit_linear_recovers_known_coefficients_per_task():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(4, 200, 5, generator=generator, dtype=torch.float64)
    true_coeffs = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    targets = (features @ true_coeffs.unsqueeze(-1)).squeeze(-1)
    weights = torch.ones(4, 200, dtype=torch.float64)
    weights[:, 150:] = 0.0
    targets[:, 150:] = 1e3  # rows with weight 0 must not matter
    coeffs = fit_linear(features, targets, weights, reg_coeff=1e-10)
    torch.testing.assert_close(coeffs, true_coeffs, atol=1e-6, rtol=0)


def test_fit_predict_recovers_returns_that_are_linear_in_features():
    # Choose rewards so that the discounted returns are exactly linear in the features of
    # each task (different coefficients per task); the baseline must then predict them exactly.
    generator = torch.Generator().manual_seed(1)
    tasks, episodes, horizon, obs_dim = 3, 5, 8, 2
    observations = torch.rand(
        tasks, episodes, horizon, obs_dim, generator=generator, dtype=torch.float64
    )
    coeffs = torch.randn(tasks, 1, 1, 2 * obs_dim + 4, generator=generator, dtype=torch.float64)
    target_returns = (baseline_features(observations) * coeffs).sum(-1)  # [T, E, H]
    discount = 0.9
    next_returns = torch.nn.functional.pad(target_returns[..., 1:], (0, 1))
    rewards = target_returns - discount * next_returns
    mask = torch.ones(tasks, episodes, horizon, dtype=torch.float64)
    eps = Episodes(
        observations, torch.zeros(tasks, episodes, horizon, 1, dtype=torch.float64), rewards, mask
    )
    torch.testing.assert_close(discounted_returns(rewards, mask, discount), target_returns)
    values = LinearFeatureBaseline(reg_coeff=1e-12).fit_predict(eps, discount)
    torch.testing.assert_close(values, target_returns, atol=1e-5, rtol=0)


def test_fit_predict_is_zero_on_padding_and_float32_in_float32_out():
    generator = torch.Generator().manual_seed(2)
    observations = torch.randn(2, 3, 5, 4, generator=generator)
    mask = torch.ones(2, 3, 5)
    mask[0, 0, 3:] = 0.0
    eps = Episodes(
        observations,
        torch.zeros(2, 3, 5, 1),
        torch.randn(2, 3, 5, generator=generator) * mask,
        mask,
    )
    values = LinearFeatureBaseline().fit_predict(eps, 0.99)
    assert values.dtype == torch.float32 and values.shape == (2, 3, 5)
    assert torch.all(values[0, 0, 3:] == 0.0)


def _padded_walks(seed: int, tasks: int = 3, episodes: int = 5, horizon: int = 40):
    """Random-walk observations (as a Point2DNav-like sampler yields), padding zeroed, some ends early."""
    from tests.metarl.synthetic_episodes import random_episodes

    eps = random_episodes(tasks, episodes, horizon, obs_dim=2, seed=seed)
    walks = torch.cumsum(eps.observations * 0.1, dim=2) * eps.mask.unsqueeze(-1)
    rewards = -walks.norm(dim=-1) * eps.mask + 0.05 * eps.rewards
    lengths = eps.mask.sum(-1)
    assert lengths.min() < horizon  # some episodes are padded
    return Episodes(walks, eps.actions, rewards, eps.mask)


def test_fit_predict_with_padding_equals_lstsq_on_the_taken_steps_only():
    from tests.metarl.reference_estimators import linear_baseline_values

    for seed in range(3):
        eps = _padded_walks(seed)
        got = LinearFeatureBaseline(reg_coeff=1e-5).fit_predict(eps, 0.99)
        expected = linear_baseline_values(eps.observations.numpy(), eps.rewards.numpy(),
                                          eps.mask.numpy(), 0.99, 1e-5)
        torch.testing.assert_close(got, torch.from_numpy(expected), atol=1e-6, rtol=1e-6)
        # the fit matters: values are far from a constant
        assert float(got[eps.mask > 0].std()) > 0.05


def test_a_singular_system_grows_the_regulariser_and_nan_inputs_are_refused():
    import pytest

    generator = torch.Generator().manual_seed(4)
    base = torch.randn(2, 50, 3, generator=generator, dtype=torch.float64)
    features = torch.cat([base, base[..., :1]], dim=-1)  # a duplicated column: X^T X is singular
    targets = base @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    weights = torch.ones(2, 50, dtype=torch.float64)
    # 1e-17 .. 1e-15 leave X^T X + c I numerically singular here; the fourth try (1e-14) solves it
    coeffs = fit_linear(features, targets, weights, reg_coeff=1e-17)
    predictions = (features @ coeffs.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(predictions, targets, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="stays singular"):  # five tries end at 1e-296
        fit_linear(features, targets, weights, reg_coeff=1e-300)
    features[1, 3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"singular for tasks \[1\]"):
        fit_linear(features, targets, weights, reg_coeff=1e-5)
    with pytest.raises(ValueError, match="reg_coeff must be > 0"):
        LinearFeatureBaseline(reg_coeff=0.0)
