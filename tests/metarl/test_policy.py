"""The functional policy evaluation: batched forward equals vmap of the module's forward."""

import pytest
import torch
from torch.func import functional_call, vmap

from metarl.policy import GaussianMLPPolicy, batched_policy_forward


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("middle", [(), (6,), (2, 7)])
def test_batched_forward_equals_vmap_of_the_module(dtype, middle):
    generator = torch.Generator().manual_seed(0)
    policy = GaussianMLPPolicy(5, 3, hidden_sizes=(17, 9)).to(dtype)
    task_params = {
        name: value.detach().expand(4, *value.shape)
        + 0.1 * torch.randn(4, *value.shape, generator=generator, dtype=dtype)
        for name, value in policy.named_parameters()
    }
    obs = torch.randn(4, *middle, 5, generator=generator, dtype=dtype)
    expected = vmap(lambda p, o: functional_call(policy, p, (o,)))(task_params, obs)
    mean, log_std = batched_policy_forward(policy, task_params, obs)
    assert mean.shape == (4, *middle, 3)
    torch.testing.assert_close(
        mean, expected[0], rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0
    )
    assert torch.equal(log_std, expected[1])
