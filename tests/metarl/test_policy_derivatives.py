"""Closed-form derivative products of the Gaussian MLP policy against autograd (float64)."""

import dataclasses

import pytest
import torch
from torch.func import grad, jvp

from metarl.algorithms.maml.batch import detached, query_terms
from metarl.algorithms.maml.config import MAMLConfig, TRPOConfig
from metarl.algorithms.maml.curvature import GaussianFisher, LikelihoodLossHessian, TaskMLP
from metarl.algorithms.maml.learner import MAMLLearner
from metarl.algorithms.maml.trpo import ClosedFormTRPO, gauss_newton_product_fn
from metarl.algorithms.trust_region import flatten, hessian_vector_product_fn
from metarl.core.policy import (
    GaussianMLPPolicy,
    batched_policy_forward,
    gaussian_kl,
    gaussian_log_prob,
)
from tests.metarl.synthetic_episodes import random_episodes

DTYPE = torch.float64


def close(actual, expected):
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-9, atol=1e-12)


@pytest.fixture(params=["tanh", "relu"])
def problem(request):
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 2, hidden_sizes=(7, 5), init_std=0.7, nonlinearity=request.param).to(DTYPE)
    tasks, steps = 3, 11

    def noise(*shape):
        return torch.randn(*shape, generator=generator, dtype=DTYPE)

    params = {  # distinct parameters per task
        name: value.detach().expand(tasks, *value.shape) + 0.1 * noise(tasks, *value.shape)
        for name, value in policy.named_parameters()
    }
    tangent = {name: noise(*value.shape) for name, value in params.items()}
    data = {
        "observations": noise(tasks, steps, 3),
        "actions": noise(tasks, steps, 2),
        "coefficients": noise(tasks, steps),
        "old_log_probs": 0.1 * noise(tasks, steps),
        "weights": torch.rand(tasks, steps, generator=generator, dtype=DTYPE),
    }
    return policy, params, tangent, data


@pytest.mark.parametrize("likelihood_ratio", [False, True])
def test_loss_gradient_and_hessian_product_match_autograd(problem, likelihood_ratio):
    policy, params, tangent, data = problem
    old = data["old_log_probs"] if likelihood_ratio else None

    def loss(task_params):
        mean, log_std = batched_policy_forward(policy, task_params, data["observations"])
        log_probs = gaussian_log_prob(mean, log_std[:, None, :], data["actions"])
        values = torch.exp(log_probs - old) if likelihood_ratio else log_probs
        return (data["coefficients"] * values).sum()

    _, expected_product = jvp(grad(loss), (params,), (tangent,))
    with torch.no_grad():
        model = LikelihoodLossHessian(
            TaskMLP(policy, params, data["observations"]),
            data["actions"],
            data["coefficients"],
            likelihood_ratio,
            old,
        )
        close(model.gradient(), grad(loss)(params))
        close(model.hessian_product(tangent), expected_product)


def test_fisher_product_and_quadratic_form_match_the_kl_hessian(problem):
    policy, params, tangent, data = problem

    def kl(task_params):  # KL(π_old || π) with π_old frozen at ``params``
        mean, log_std = batched_policy_forward(policy, task_params, data["observations"])
        return (
            data["weights"]
            * gaussian_kl(mean.detach(), log_std.detach()[:, None, :], mean, log_std[:, None, :])
        ).sum()

    _, expected = jvp(grad(kl), (params,), (tangent,))
    with torch.no_grad():
        fisher = GaussianFisher(TaskMLP(policy, params, data["observations"]), data["weights"])
        close(fisher.product(tangent), expected)
        per_task = sum((expected[name] * tangent[name]).flatten(1).sum(1) for name in expected)
        torch.testing.assert_close(fisher.quadratic_form(tangent), per_task, rtol=1e-9, atol=0)


def maml_setup(objective, first_order, num_tasks=4, nonlinearity="tanh"):
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 2, hidden_sizes=(16,), init_std=0.8, nonlinearity=nonlinearity).to(DTYPE)
    config = MAMLConfig(inner_objective=objective, first_order=first_order, inner_lr=0.5)
    learner = MAMLLearner(policy, config, "cpu")
    support = random_episodes(num_tasks=num_tasks, episodes_per_task=6, horizon=10, seed=0)
    query = random_episodes(num_tasks=num_tasks, episodes_per_task=6, horizon=10, seed=100)
    return learner, learner.batch([support], query)


def closed_form_model(learner, params, batch, config):
    _, support_mlps, query_mlp = learner.adapt_closed_form(
        params, batch.support, batch.support_advantages, [config.inner_lr], query=batch.query
    )
    return ClosedFormTRPO(support_mlps[0], query_mlp, batch, config)


@pytest.mark.parametrize("objective", ["vpg", "lvc"])
def test_closed_form_adaptation_equals_the_autograd_one(objective):
    learner, batch = maml_setup(objective, first_order=False)
    params = learner.policy.params()
    generator = torch.Generator().manual_seed(6)
    shifted = {  # a point away from the sampling policy, as in the line search
        name: value.detach() + 0.05 * torch.randn(value.shape, generator=generator, dtype=DTYPE)
        for name, value in params.items()
    }
    two_steps = [batch.support[0], batch.support[0]]
    advantages = [batch.support_advantages[0]] * 2
    with torch.no_grad():
        sampling = learner.post_adaptation(params, batch, False)
        old_log_probs = [sampling.steps[0].log_probs] * 2
        expected = learner.post_adaptation(
            shifted,
            dataclasses.replace(batch, support=two_steps, support_advantages=advantages),
            False,
            old_log_probs,
        )
        actual, _, _ = learner.adapt_closed_form(
            shifted, two_steps, advantages, [0.5, 0.5], old_log_probs, batch.query
        )
    for got, want in zip(actual.steps, expected.steps, strict=True):
        for name in want.params:
            torch.testing.assert_close(got.params[name], want.params[name], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got.mean, want.mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got.log_probs, want.log_probs, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(actual.query_mean, expected.query_mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        actual.query_log_probs, expected.query_log_probs, rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("objective", ["vpg", "lvc"])
def test_closed_form_trpo_matches_autograd_through_the_adaptation(objective, first_order, nonlinearity):
    learner, batch = maml_setup(objective, first_order, nonlinearity=nonlinearity)
    params = learner.policy.params()
    names = list(params)
    param_list = [params[name] for name in names]
    vector = torch.randn(
        sum(p.numel() for p in param_list), generator=torch.Generator().manual_seed(3), dtype=DTYPE
    )
    # reference: autograd through the (cut) adaptation graph
    post = learner.post_adaptation(params, batch, not first_order, cut_at_adapted=True)
    surrogate, kl = query_terms(post, batch, detached(post))
    reference_product = gauss_newton_product_fn(post, names, param_list, kl, 1e-3)(vector)
    post = learner.post_adaptation(params, batch, not first_order)
    surrogate, _ = query_terms(post, batch, detached(post))
    reference_gradient = flatten(torch.autograd.grad(surrogate, param_list))

    config = MAMLConfig(
        inner_objective=objective, first_order=first_order, inner_lr=0.5, trpo=TRPOConfig(cg_damping=1e-3)
    )
    with torch.no_grad():
        model = closed_form_model(learner, params, batch, config)
        torch.testing.assert_close(
            model.surrogate_gradient(), reference_gradient, rtol=1e-9, atol=1e-12
        )
        product = model.kl_hessian_product(vector)
        torch.testing.assert_close(product, reference_product, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(
            model.kl_quadratic_form(vector), vector @ product, rtol=1e-9, atol=0
        )


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_closed_form_kl_product_is_the_exact_third_order_hessian(nonlinearity):
    learner, batch = maml_setup("vpg", first_order=False, nonlinearity=nonlinearity)
    params = learner.policy.params()
    param_list = list(params.values())
    vector = torch.randn(
        sum(p.numel() for p in param_list), generator=torch.Generator().manual_seed(4), dtype=DTYPE
    )
    post = learner.post_adaptation(params, batch, True)
    _, kl = query_terms(post, batch, detached(post))
    kl_gradient = torch.autograd.grad(kl, param_list, create_graph=True)
    exact = hessian_vector_product_fn(kl_gradient, param_list, 0.0)(vector)
    config = MAMLConfig(inner_lr=0.5, trpo=TRPOConfig(cg_damping=0.0))
    with torch.no_grad():
        model = closed_form_model(learner, params, batch, config)
        torch.testing.assert_close(model.kl_hessian_product(vector), exact, rtol=1e-9, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_closed_form_trpo_on_cuda_matches_cpu():
    learner, batch = maml_setup("lvc", first_order=False)
    params = {name: value.detach() for name, value in learner.policy.params().items()}
    vector = torch.randn(
        sum(p.numel() for p in params.values()),
        generator=torch.Generator().manual_seed(5),
        dtype=DTYPE,
    )
    config = MAMLConfig(inner_objective="lvc", inner_lr=0.5, trpo=TRPOConfig(cg_damping=1e-3))
    results = []
    for device in ("cpu", "cuda"):
        on_device = {name: value.to(device) for name, value in params.items()}
        data = dataclasses.replace(
            batch,
            support=[episodes.to(device) for episodes in batch.support],
            query=batch.query.to(device),
            support_advantages=[a.to(device) for a in batch.support_advantages],
            query_advantages=batch.query_advantages.to(device),
        )
        with torch.no_grad():
            model = closed_form_model(learner, on_device, data, config)
            results.append(
                (
                    model.surrogate_gradient().cpu(),
                    model.kl_hessian_product(vector.to(device)).cpu(),
                )
            )
    for cpu_result, cuda_result in zip(*results, strict=True):
        torch.testing.assert_close(cuda_result, cpu_result, rtol=1e-7, atol=1e-10)
