"""Functional adaptation: hand-computed steps, second-order gradients, no module mutation."""

import pytest
import torch

from metarl.algorithms.adaptation import adapt, estimate_advantages, inner_loss, inner_step
from metarl.core.policy import GaussianMLPPolicy, batched_policy_forward, stack_params
from tests.metarl.synthetic_episodes import random_episodes


def make_policy(obs_dim=3, act_dim=2, hidden=(8,), seed=0):
    torch.manual_seed(seed)
    return GaussianMLPPolicy(obs_dim, act_dim, hidden_sizes=hidden, init_std=0.7).double()


def random_advantages(episodes, seed=5):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(episodes.rewards.shape, generator=generator, dtype=torch.float64)
        * episodes.mask
    )


def flat(params):
    return torch.cat([value.reshape(-1) for value in params.values()])


def test_inner_step_of_linear_gaussian_policy_matches_hand_computed_step():
    policy = make_policy(hidden=())
    episodes = random_episodes(num_tasks=2)
    advantages = random_advantages(episodes)
    lr = 0.3
    adapted = inner_step(
        policy, stack_params(policy.params(), 2), episodes, lr, advantages=advantages
    )

    weight, bias, log_std = policy.layers[0].weight, policy.layers[0].bias, policy.log_std
    for task in range(2):
        obs, act = episodes.observations[task], episodes.actions[task]  # [E, H, obs], [E, H, act]
        adv, mask = advantages[task], episodes.mask[task]
        count = mask.sum()
        mean = obs @ weight.T + bias
        var = torch.exp(2 * log_std)
        dlogp_dmean = (act - mean) / var  # [E, H, act]
        dlogp_dlogstd = (act - mean) ** 2 / var - 1.0
        w = (adv * mask).unsqueeze(-1) / count  # [E, H, 1]
        grad_weight = torch.einsum("eha,eho->ao", w * dlogp_dmean, obs)
        grad_bias = (w * dlogp_dmean).sum((0, 1))
        grad_log_std = (w * dlogp_dlogstd).sum((0, 1))
        with torch.no_grad():
            torch.testing.assert_close(adapted["layers.0.weight"][task], weight + lr * grad_weight)
            torch.testing.assert_close(adapted["layers.0.bias"][task], bias + lr * grad_bias)
            torch.testing.assert_close(adapted["log_std"][task], log_std + lr * grad_log_std)


def test_estimate_advantages_is_normalised_gae_on_the_linear_baseline():
    # the reference: numpy lstsq baseline on the taken steps, GAE and normalisation as plain loops
    from tests.metarl.reference_estimators import (
        gae_loop,
        linear_baseline_values,
        normalize_per_task,
        padded_apply,
    )

    episodes = random_episodes(horizon=9)
    obs, rewards, mask = (episodes.observations.numpy(), episodes.rewards.numpy(),
                          episodes.mask.numpy())
    values = linear_baseline_values(obs, rewards, mask, 0.9, 1e-5)
    advantages = padded_apply(lambda r, v: gae_loop(r, v, 0.9, 0.95), mask, rewards, values)
    expected = torch.from_numpy(normalize_per_task(advantages, mask))
    torch.testing.assert_close(estimate_advantages(episodes, 0.9, 0.95), expected, atol=1e-6, rtol=1e-6)
    unnormalised = torch.from_numpy(advantages)
    torch.testing.assert_close(estimate_advantages(episodes, 0.9, 0.95, normalize=False), unnormalised,
                               atol=1e-6, rtol=1e-6)
    # inner_step computes the same advantages by itself when none are passed
    policy = make_policy()
    params = stack_params(policy.params(), episodes.num_tasks)
    torch.testing.assert_close(
        inner_step(policy, params, episodes, 0.1, discount=0.9, gae_lambda=0.95),
        inner_step(policy, params, episodes, 0.1, advantages=expected),
    )


def test_tasks_adapt_independently():
    policy = make_policy()
    episodes = random_episodes(num_tasks=3)
    advantages = random_advantages(episodes)
    together = inner_step(
        policy, stack_params(policy.params(), 3), episodes, 0.1, advantages=advantages
    )
    for task in range(3):
        alone = inner_step(
            policy,
            stack_params(policy.params(), 1),
            episodes.task_slice(task),
            0.1,
            advantages=advantages[task : task + 1],
        )
        for name in together:
            torch.testing.assert_close(together[name][task], alone[name][0])


def post_adaptation_objective(
    policy, params, support, query, support_adv, query_adv, objective, create_graph, steps=1
):
    adapted = adapt(
        policy,
        params,
        [support] * steps,
        [0.5] * steps,
        objective,
        create_graph=create_graph,
        advantages_per_step=[support_adv] * steps,
    )
    return inner_loss(policy, adapted, query, query_adv, "vpg").mean()


@pytest.mark.parametrize("steps", [1, 2])
def test_second_order_meta_gradient_matches_finite_differences(steps):
    # Only for "vpg": on a fixed batch, lvc's inner step is the same function of the
    # parameters as vpg's; its different Hessian estimates the curvature of the
    # *expected* return (sampling distribution included), which a fixed batch cannot show.
    objective = "vpg"
    policy = make_policy()
    support, query = random_episodes(seed=1), random_episodes(seed=2)
    support_adv, query_adv = random_advantages(support, 3), random_advantages(query, 4)
    params = {
        name: value.detach().clone().requires_grad_(True) for name, value in policy.params().items()
    }
    value = post_adaptation_objective(
        policy, params, support, query, support_adv, query_adv, objective, True, steps
    )
    grads = torch.autograd.grad(value, list(params.values()))
    analytic = torch.cat([g.reshape(-1) for g in grads])

    generator = torch.Generator().manual_seed(9)
    eps = 1e-6
    for _ in range(3):
        direction = {
            n: torch.randn(v.shape, generator=generator, dtype=v.dtype) for n, v in params.items()
        }
        with torch.no_grad():
            plus = {n: params[n] + eps * direction[n] for n in params}
            minus = {n: params[n] - eps * direction[n] for n in params}
        numeric = (
            post_adaptation_objective(
                policy, plus, support, query, support_adv, query_adv, objective, False, steps
            )
            - post_adaptation_objective(
                policy, minus, support, query, support_adv, query_adv, objective, False, steps
            )
        ) / (2 * eps)
        torch.testing.assert_close(
            analytic @ flat(direction), numeric.detach(), rtol=1e-6, atol=1e-8
        )


def test_first_order_meta_gradient_differs_from_second_order():
    policy = make_policy()
    support, query = random_episodes(seed=1), random_episodes(seed=2)
    support_adv, query_adv = random_advantages(support, 3), random_advantages(query, 4)
    params = {
        name: value.detach().clone().requires_grad_(True) for name, value in policy.params().items()
    }
    grads = {}
    for create_graph in (True, False):
        value = post_adaptation_objective(
            policy, params, support, query, support_adv, query_adv, "vpg", create_graph
        )
        grads[create_graph] = torch.cat(
            [g.reshape(-1) for g in torch.autograd.grad(value, list(params.values()))]
        )
    # first order = gradient of the query loss at the adapted parameters
    adapted = adapt(policy, params, [support], [0.5], advantages_per_step=[support_adv])
    direct = torch.autograd.grad(
        inner_loss(policy, adapted, query, query_adv).mean(), list(params.values())
    )
    torch.testing.assert_close(grads[False], torch.cat([g.reshape(-1) for g in direct]))
    relative = (grads[True] - grads[False]).norm() / grads[True].norm()
    assert relative > 0.05, (
        f"curvature term too small to tell first from second order ({relative:.3g})"
    )


def test_lvc_has_vpg_gradient_but_different_hessian():
    policy = make_policy()
    episodes = random_episodes(seed=1)
    advantages = random_advantages(episodes)
    params = stack_params(
        {n: v.detach().clone().requires_grad_(True) for n, v in policy.params().items()}, 3
    )
    names = list(params)
    grads, hvps = {}, {}
    direction = [
        torch.randn(
            params[n].shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64
        )
        for n in names
    ]
    for objective in ("vpg", "lvc"):
        loss = inner_loss(policy, params, episodes, advantages, objective).sum()
        grad = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True)
        grads[objective] = torch.cat([g.reshape(-1) for g in grad])
        dot = sum((g * d).sum() for g, d in zip(grad, direction, strict=True))
        hvps[objective] = torch.cat(
            [h.reshape(-1) for h in torch.autograd.grad(dot, [params[n] for n in names])]
        )
    torch.testing.assert_close(grads["lvc"], grads["vpg"])
    assert (hvps["lvc"] - hvps["vpg"]).norm() > 0.05 * hvps["vpg"].norm()


def test_lvc_with_old_log_probs_importance_weights():
    policy = make_policy()
    episodes = random_episodes(seed=1)
    advantages = random_advantages(episodes)
    params = stack_params(policy.params(), 3)
    mean, log_std = batched_policy_forward(policy, params, episodes.observations)
    from metarl.core.policy import gaussian_log_prob

    log_probs = gaussian_log_prob(mean, log_std[:, None, None, :], episodes.actions).detach()
    same = inner_step(
        policy, params, episodes, 0.1, "lvc", advantages=advantages, old_log_probs=log_probs
    )
    plain = inner_step(policy, params, episodes, 0.1, "lvc", advantages=advantages)
    torch.testing.assert_close(same, plain)
    shifted = inner_step(
        policy, params, episodes, 0.1, "lvc", advantages=advantages, old_log_probs=log_probs - 1.0
    )
    # ratio e^1 everywhere: the step is e times longer
    for name in params:
        torch.testing.assert_close(
            shifted[name] - params[name], torch.e * (plain[name] - params[name])
        )


def test_adaptation_never_mutates_the_module():
    policy = make_policy()
    before = {name: value.detach().clone() for name, value in policy.state_dict().items()}
    support, query = random_episodes(seed=1), random_episodes(seed=2)
    params = {n: v for n, v in policy.params().items()}  # the module's own tensors, requiring grad
    adapted = adapt(policy, params, [support, support], [0.1, 0.05], "lvc", create_graph=True)
    inner_loss(
        policy, adapted, query, random_advantages(query)
    ).sum().backward()  # grads flow to .grad only
    for name, value in policy.state_dict().items():
        assert torch.equal(value, before[name]), name
    with torch.no_grad():  # adaptation still works (and stays detached) under no_grad
        detached = adapt(policy, policy.params(), [support], [0.1])
    assert all(not value.requires_grad for value in detached.values())
    for name, value in policy.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_bad_arguments_raise():
    policy = make_policy()
    episodes = random_episodes()
    params = stack_params(policy.params(), 3)
    with pytest.raises(ValueError, match="objective"):
        inner_step(policy, params, episodes, 0.1, objective="ppo")
    with pytest.raises(ValueError, match="lr"):
        inner_step(policy, params, episodes, -0.1)
    with pytest.raises(ValueError, match="lrs"):
        adapt(policy, policy.params(), [episodes], [0.1, 0.1])
    with pytest.raises(ValueError, match="shape"):
        adapt(policy, stack_params(policy.params(), 2), [episodes], [0.1])
