"""Discounted returns, GAE and advantage normalisation against hand-computed sequences."""

import pytest
import torch

from metarl.core.returns import discounted_returns, gae, normalize_advantages


def test_discounted_returns_hand_computed_with_padding():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    got = discounted_returns(rewards, mask, 0.5)
    expected = torch.tensor(
        [[1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0, 0.0], [1.875, 1.75, 1.5, 1.0]]
    )
    torch.testing.assert_close(got, expected)


def test_discounted_returns_ignore_garbage_on_padding():
    rewards = torch.tensor([[1.0, 2.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    torch.testing.assert_close(
        discounted_returns(rewards, mask, 0.9), torch.tensor([[1.0 + 0.9 * 2.0, 2.0, 0.0]])
    )


def test_gae_hand_computed_with_padding():
    rewards = torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.0]])
    values = torch.tensor([[0.5, 1.0, 0.25, 9.0, 9.0]])  # values on padding must be ignored
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0]])
    gamma, lam = 0.9, 0.8
    d0 = 1.0 + gamma * 1.0 - 0.5
    d1 = 0.0 + gamma * 0.25 - 1.0
    d2 = 2.0 + 0.0 - 0.25  # episode ended: no bootstrap
    expected = torch.tensor(
        [[d0 + gamma * lam * d1 + (gamma * lam) ** 2 * d2, d1 + gamma * lam * d2, d2, 0.0, 0.0]]
    )
    torch.testing.assert_close(gae(rewards, values, mask, gamma, lam), expected)


def test_gae_with_lambda_one_is_returns_minus_values():
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randn(3, 4, 7, generator=generator, dtype=torch.float64)
    values = torch.randn(3, 4, 7, generator=generator, dtype=torch.float64)
    mask = (torch.arange(7) < torch.randint(1, 8, (3, 4, 1), generator=generator)).double()
    expected = (discounted_returns(rewards, mask, 0.99) - values) * mask
    torch.testing.assert_close(gae(rewards, values, mask, 0.99, 1.0), expected)


def test_gae_with_lambda_zero_is_one_step_td_error():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.1, 0.2, 0.3]])
    mask = torch.ones(1, 3)
    expected = torch.tensor([[1.0 + 0.5 * 0.2 - 0.1, 2.0 + 0.5 * 0.3 - 0.2, 3.0 - 0.3]])
    torch.testing.assert_close(gae(rewards, values, mask, 0.5, 0.0), expected)


def test_normalize_advantages_per_task_over_taken_steps():
    advantages = torch.tensor([[[1.0, 3.0, 50.0]], [[10.0, 20.0, 30.0]]])
    mask = torch.tensor([[[1.0, 1.0, 0.0]], [[1.0, 1.0, 1.0]]])
    got = normalize_advantages(advantages, mask)
    torch.testing.assert_close(got[0], torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-6, rtol=0)
    std = torch.tensor([10.0, 20.0, 30.0]).std(unbiased=False)
    torch.testing.assert_close(got[1], torch.tensor([[-10.0, 0.0, 10.0]]) / std, atol=1e-6, rtol=0)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="discount"):
        discounted_returns(torch.zeros(2, 3), torch.ones(2, 3), 1.5)
    with pytest.raises(ValueError, match="gae_lambda"):
        gae(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3), 0.9, -0.1)
    with pytest.raises(ValueError, match="mask"):
        discounted_returns(torch.zeros(2, 3), torch.ones(2, 4), 0.9)


def test_returns_gae_and_normalisation_equal_plain_loops_over_each_episode():
    import numpy as np

    from tests.metarl.reference_estimators import (
        gae_loop,
        normalize_per_task,
        padded_apply,
        returns_loop,
    )

    generator = torch.Generator().manual_seed(3)
    rewards = torch.randn(3, 4, 12, generator=generator, dtype=torch.float64)
    values = torch.randn(3, 4, 12, generator=generator, dtype=torch.float64)
    lengths = torch.randint(1, 13, (3, 4, 1), generator=generator)
    lengths[0, 0] = 12
    mask = (torch.arange(12) < lengths).double()
    rewards_np, values_np, mask_np = rewards.numpy(), values.numpy(), mask.numpy()
    for gamma, lam in ((0.99, 0.95), (0.9, 1.0), (0.5, 0.0), (1.0, 0.7)):
        expected_returns = padded_apply(lambda r, g=gamma: returns_loop(r, g), mask_np, rewards_np)
        torch.testing.assert_close(discounted_returns(rewards, mask, gamma), torch.from_numpy(expected_returns))
        expected_gae = padded_apply(lambda r, v, g=gamma, lm=lam: gae_loop(r, v, g, lm), mask_np, rewards_np,
                                    values_np)
        got = gae(rewards, values, mask, gamma, lam)
        torch.testing.assert_close(got, torch.from_numpy(expected_gae))
        torch.testing.assert_close(normalize_advantages(got, mask),
                                   torch.from_numpy(normalize_per_task(expected_gae, mask_np)))
    assert np.any(mask_np == 0)
