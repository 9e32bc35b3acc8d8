"""The functional policy evaluation: batched forward equals vmap of the module's forward."""

import pytest
import torch
from torch.func import functional_call, vmap

from metarl.core.policy import SMALL_OUTPUT_SCALE, GaussianMLPPolicy, batched_policy_forward


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


def test_relu_policy_forward_and_batched_forward():
    generator = torch.Generator().manual_seed(1)
    policy = GaussianMLPPolicy(4, 2, hidden_sizes=(6, 5), nonlinearity="relu").to(torch.float64)
    obs = torch.randn(3, 7, 4, generator=generator, dtype=torch.float64)
    first, second, last = policy.layers
    expected = last(torch.relu(second(torch.relu(first(obs)))))
    torch.testing.assert_close(policy(obs)[0], expected, rtol=1e-12, atol=0)
    task_params = {name: value.detach().expand(3, *value.shape) for name, value in policy.named_parameters()}
    torch.testing.assert_close(batched_policy_forward(policy, task_params, obs)[0], expected, rtol=1e-12, atol=1e-15)
    # a tanh policy with the same weights computes something else
    tanh = GaussianMLPPolicy(4, 2, hidden_sizes=(6, 5)).to(torch.float64)
    tanh.load_state_dict(policy.state_dict())
    assert not torch.allclose(tanh(obs)[0], expected)


def test_unknown_nonlinearity_is_refused():
    with pytest.raises(ValueError, match="unknown nonlinearity 'elu'; available: tanh, relu"):
        GaussianMLPPolicy(4, 2, nonlinearity="elu")


def test_xavier_init_has_zero_biases_and_a_zero_mean_at_the_origin():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(100, 100), weight_init="xavier")
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in policy.layers)
    bound = (6.0 / (100 + 100)) ** 0.5  # Xavier-uniform bound of the 100x100 layer
    assert float(policy.layers[1].weight.detach().abs().max()) <= bound
    assert float(policy.layers[1].weight.detach().abs().max()) > 0.9 * bound  # not PyTorch's ±0.1
    assert torch.equal(policy(torch.zeros(3, 2))[0], torch.zeros(3, 2))
    torch.manual_seed(0)
    default = GaussianMLPPolicy(2, 2, hidden_sizes=(100, 100))
    assert torch.count_nonzero(default.layers[0].bias) > 0 and float(default.layers[1].weight.detach().abs().max()) <= 0.1
    with pytest.raises(ValueError, match="unknown weight_init 'he'; available: pytorch, xavier, xavier_small_out"):
        GaussianMLPPolicy(2, 2, weight_init="he")


def test_small_output_init_scales_only_the_output_layer_of_the_xavier_init():
    torch.manual_seed(0)
    xavier = GaussianMLPPolicy(2, 2, hidden_sizes=(100, 100), weight_init="xavier")
    torch.manual_seed(0)
    small = GaussianMLPPolicy(2, 2, hidden_sizes=(100, 100), weight_init="xavier_small_out")
    for a, b in zip(xavier.layers[:-1], small.layers[:-1], strict=True):
        assert torch.equal(a.weight, b.weight) and torch.count_nonzero(b.bias) == 0
    torch.testing.assert_close(small.layers[-1].weight, SMALL_OUTPUT_SCALE * xavier.layers[-1].weight)
    assert torch.count_nonzero(small.layers[-1].bias) == 0
    obs = torch.randn(256, 2)
    ratio = small(obs)[0].abs().max() / xavier(obs)[0].abs().max()
    assert float(ratio.detach()) == pytest.approx(SMALL_OUTPUT_SCALE, rel=1e-4)  # the mean is linear in the last layer
