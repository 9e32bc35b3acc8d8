"""The MAML meta-learner: config validation, TRPO trust region, ProMP improvement, resume state."""

import dataclasses
import re

import pytest
import torch

from metarl.algorithms.adaptation import adapt, estimate_advantages, masked_mean
from metarl.algorithms.maml.config import (
    OUTER_ALGORITHMS,
    OUTER_CONFIGS,
    MAMLConfig,
    ProMPConfig,
    TRPOConfig,
)
from metarl.algorithms.maml.learner import OUTER_LOOPS, MAMLLearner
from metarl.core.policy import (
    GaussianMLPPolicy,
    batched_policy_forward,
    gaussian_kl,
    gaussian_log_prob,
    stack_params,
)
from tests.metarl.synthetic_episodes import random_episodes


def make_policy(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return GaussianMLPPolicy(3, 2, hidden_sizes=(16,), init_std=0.8).to(dtype)


def batch(seed=0, dtype=torch.float64, num_tasks=4):
    support = random_episodes(
        num_tasks=num_tasks, episodes_per_task=6, horizon=10, seed=seed, dtype=dtype
    )
    query = random_episodes(
        num_tasks=num_tasks, episodes_per_task=6, horizon=10, seed=seed + 100, dtype=dtype
    )
    return support, query


def snapshot(policy):
    return {name: value.detach().clone() for name, value in policy.params().items()}


def support_log_probs(policy, params, support):
    """Log-probabilities of the support actions under shared ``params`` (the sampling policy)."""
    with torch.no_grad():
        mean, log_std = batched_policy_forward(
            policy, stack_params(params, support.num_tasks), support.observations
        )
        return gaussian_log_prob(mean, log_std[:, None, None], support.actions)


def post_adaptation_stats(policy, params, support, query, config, sampling_params):
    """The post-adaptation policy at ``params`` on the query observations.

    lvc importance-weights its inner step by the policy that sampled the support data
    (``sampling_params``), as the learner does.
    """
    adv_s = estimate_advantages(support, config.discount, config.gae_lambda)
    adapted = adapt(
        policy,
        params,
        [support],
        [config.inner_lr],
        config.inner_objective,
        advantages_per_step=[adv_s],
        old_log_probs_per_step=[support_log_probs(policy, sampling_params, support)],
    )
    mean, log_std = batched_policy_forward(policy, adapted, query.observations)
    return mean.detach(), log_std.detach()


@pytest.mark.parametrize(
    "key, value, label",
    [
        ("inner_lr", -0.1, "MAMLConfig.inner_lr"),
        ("inner_lr", 0.0, "MAMLConfig.inner_lr"),
        ("inner_steps", 0, "MAMLConfig.inner_steps"),
        ("inner_steps", 1.5, "MAMLConfig.inner_steps"),
        ("inner_objective", "dice", "MAMLConfig.inner_objective"),
        ("outer", "ppo", "MAMLConfig.outer"),
        ("max_kl", 0.0, "TRPOConfig.max_kl"),
        ("cg_iters", 0, "TRPOConfig.cg_iters"),
        ("cg_damping", -1.0, "TRPOConfig.cg_damping"),
        ("cg_subsample", 0.0, "TRPOConfig.cg_subsample"),
        ("cg_subsample", 1.5, "TRPOConfig.cg_subsample"),
        ("line_search_steps", 0, "TRPOConfig.line_search_steps"),
        ("line_search_backtrack", 1.0, "TRPOConfig.line_search_backtrack"),
        ("promp_clip_eps", 0.0, "ProMPConfig.clip_eps"),
        ("promp_kl_coef", -1e-3, "ProMPConfig.kl_coef"),
        ("promp_steps", 0, "ProMPConfig.steps"),
        ("promp_lr", 0.0, "ProMPConfig.lr"),
        ("discount", 1.5, "MAMLConfig.discount"),
        ("gae_lambda", -0.1, "MAMLConfig.gae_lambda"),
        ("first_order", "yes", "MAMLConfig.first_order"),
    ],
)
def test_bad_config_values_raise_naming_the_field(key, value, label):
    with pytest.raises(ValueError, match=f"^{re.escape(label)} must be"):
        MAMLConfig.flat(**{key: value})


def test_config_error_lists_allowed_values():
    with pytest.raises(ValueError, match="MAMLConfig.outer must be one of trpo, promp, got 'sgd'"):
        MAMLConfig(outer="sgd")
    with pytest.raises(ValueError, match="MAMLConfig.promp must be a ProMPConfig"):
        MAMLConfig(promp=TRPOConfig())


def test_flat_block_round_trips_and_rejects_unknown_keys():
    """config.json's flat "maml" block (as written before the outer loops had their own sections)."""
    flat = {
        "cg_damping": 1e-05, "cg_iters": 10, "cg_subsample": 1.0, "discount": 0.99, "first_order": False,
        "gae_lambda": 1.0, "inner_lr": 0.1, "inner_objective": "vpg", "inner_steps": 1,
        "line_search_backtrack": 0.8, "line_search_steps": 15, "max_kl": 0.01, "normalize_advantages": True,
        "outer": "trpo", "promp_clip_eps": 0.3, "promp_kl_coef": 0.0005, "promp_lr": 0.001, "promp_steps": 5,
    }
    assert MAMLConfig().to_dict() == flat
    changed = MAMLConfig.from_dict({**flat, "outer": "promp", "promp_lr": 0.01, "max_kl": 0.02})
    assert changed.outer_config == ProMPConfig(lr=0.01) and changed.trpo == TRPOConfig(max_kl=0.02)
    assert MAMLConfig.from_dict(changed.to_dict()) == changed
    assert MAMLConfig().replace(cg_iters=3).trpo.cg_iters == 3
    with pytest.raises(TypeError, match="promp_bogus"):
        MAMLConfig.from_dict({**flat, "promp_bogus": 1})


def test_every_outer_loop_name_has_a_section_and_a_loop():
    assert set(OUTER_LOOPS) == set(OUTER_CONFIGS) == set(OUTER_ALGORITHMS)
    for name in OUTER_ALGORITHMS:
        config = MAMLConfig(outer=name)
        assert config.outer_config is getattr(config, name)
        assert isinstance(MAMLLearner(make_policy(), config, "cpu").outer_loop, OUTER_LOOPS[name])


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("objective", ["vpg", "lvc"])
def test_trpo_step_improves_surrogate_and_keeps_the_kl_bound(first_order, objective):
    config = MAMLConfig(
        first_order=first_order, inner_objective=objective, inner_lr=0.5, trpo=TRPOConfig(max_kl=0.01)
    )
    policy = make_policy()
    support, query = batch()
    learner = MAMLLearner(policy, config, "cpu")
    before = snapshot(policy)
    old_mean, old_log_std = post_adaptation_stats(policy, before, support, query, config, before)
    metrics = learner.meta_update([support], query)
    assert metrics["train/step_accepted"] == 1.0
    assert metrics["loss/surrogate_after"] > metrics["loss/surrogate_before"]
    after = snapshot(policy)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    # independent measurement of the KL through the adaptation
    new_mean, new_log_std = post_adaptation_stats(policy, after, support, query, config, before)
    kl = gaussian_kl(old_mean, old_log_std[:, None, None], new_mean, new_log_std[:, None, None])
    kl = masked_mean(kl, query.mask).mean()
    assert 0.0 < float(kl) <= config.trpo.max_kl
    assert float(kl) == pytest.approx(metrics["loss/kl"], rel=1e-6)
    # the quadratic model is decent: the full step lands near the bound
    assert float(kl) > 0.1 * config.trpo.max_kl


@pytest.mark.parametrize("objective", ["vpg", "lvc"])
def test_gauss_newton_kl_product_equals_third_order_hessian_product(objective):
    # TRPO's fast path (one inner step) must give exactly the Hessian of the KL through the
    # adaptation that plain double backward gives.
    from metarl.algorithms.maml.batch import detached, query_terms
    from metarl.algorithms.maml.trpo import gauss_newton_product_fn
    from metarl.algorithms.trust_region import hessian_vector_product_fn

    policy = make_policy()
    learner = MAMLLearner(policy, MAMLConfig(inner_objective=objective, inner_lr=0.5), "cpu")
    support, query = batch()
    data = learner.batch([support], query)
    params = policy.params()
    names = list(params)
    param_list = [params[n] for n in names]
    vector = torch.randn(
        sum(p.numel() for p in param_list),
        generator=torch.Generator().manual_seed(3),
        dtype=torch.float64,
    )

    post = learner.post_adaptation(params, data, True, cut_at_adapted=True)
    _, kl = query_terms(post, data, detached(post))
    fast = gauss_newton_product_fn(post, names, param_list, kl, 0.0)(vector)

    post = learner.post_adaptation(params, data, True)
    _, kl = query_terms(post, data, detached(post))
    kl_gradient = torch.autograd.grad(kl, param_list, create_graph=True)
    exact = hessian_vector_product_fn(kl_gradient, param_list, 0.0)(vector)
    torch.testing.assert_close(fast, exact, rtol=1e-9, atol=1e-12)
    # and it is not the Fisher alone (first order, J = I): the adaptation's Jacobian matters
    post = learner.post_adaptation(params, data, False, cut_at_adapted=True)
    _, kl = query_terms(post, data, detached(post))
    fisher_only = gauss_newton_product_fn(post, names, param_list, kl, 0.0)(vector)
    assert (fast - fisher_only).norm() > 0.05 * exact.norm()


def test_trpo_with_subsampled_curvature_keeps_the_kl_bound():
    config = MAMLConfig(inner_lr=0.5, trpo=TRPOConfig(cg_subsample=0.5))
    policy = make_policy()
    support, query = batch()
    before = snapshot(policy)
    old_mean, old_log_std = post_adaptation_stats(policy, before, support, query, config, before)
    metrics = MAMLLearner(policy, config, "cpu").meta_update([support], query)
    assert metrics["train/step_accepted"] == 1.0
    new_mean, new_log_std = post_adaptation_stats(
        policy, snapshot(policy), support, query, config, before
    )
    kl = gaussian_kl(old_mean, old_log_std[:, None, None], new_mean, new_log_std[:, None, None])
    assert 0.0 < float(masked_mean(kl, query.mask).mean()) <= config.trpo.max_kl


def test_trpo_leaves_parameters_unchanged_when_no_step_is_acceptable():
    # With max_kl far below what any tried fraction reaches (only 1 line-search step), the
    # quadratic model is accurate enough that the step is accepted; force a rejection by
    # negating the advantages' usefulness: a query batch with zero advantages cannot improve.
    config = MAMLConfig(trpo=TRPOConfig(line_search_steps=3))
    policy = make_policy()
    support, query = batch()
    query = dataclasses.replace(query, rewards=torch.zeros_like(query.rewards))
    learner = MAMLLearner(policy, dataclasses.replace(config, normalize_advantages=False), "cpu")
    before = snapshot(policy)
    metrics = learner.meta_update([support], query)
    assert metrics["train/step_accepted"] == 0.0
    for name, value in snapshot(policy).items():
        assert torch.equal(value, before[name])


def test_second_order_and_first_order_trpo_take_different_steps():
    steps = {}
    for first_order in (False, True):
        policy = make_policy()
        support, query = batch()
        before = snapshot(policy)
        MAMLLearner(policy, MAMLConfig(first_order=first_order, inner_lr=0.5), "cpu").meta_update(
            [support], query
        )
        steps[first_order] = torch.cat(
            [(policy.params()[n] - before[n]).detach().reshape(-1) for n in before]
        )
    cosine = steps[True] @ steps[False] / (steps[True].norm() * steps[False].norm())
    assert float(cosine) < 0.999


def test_promp_improves_the_clipped_objective_on_a_fixed_batch():
    config = MAMLConfig(outer="promp", inner_objective="lvc", promp=ProMPConfig(steps=5, lr=3e-3))
    policy = make_policy()
    support, query = batch()
    learner = MAMLLearner(policy, config, "cpu")
    metrics = learner.meta_update([support], query)
    assert metrics["loss/objective_after"] > metrics["loss/objective_before"] + 1e-3
    assert metrics["loss/inner_kl"] > 0.0

    # independent check of the clipped objective at the new parameters
    query_adv = estimate_advantages(query, config.discount, config.gae_lambda)
    support_adv = estimate_advantages(support, config.discount, config.gae_lambda)
    old_policy = make_policy()  # same seed: the parameters before the update
    old_support_log_probs = support_log_probs(old_policy, old_policy.params(), support)

    def query_log_probs(pol):
        params = adapt(
            pol,
            pol.params(),
            [support],
            [config.inner_lr],
            "lvc",
            advantages_per_step=[support_adv],
            old_log_probs_per_step=[old_support_log_probs],
        )
        with torch.no_grad():
            mean, log_std = batched_policy_forward(pol, params, query.observations)
            return gaussian_log_prob(mean, log_std[:, None, None], query.actions)

    old_log_probs = query_log_probs(old_policy)

    def clipped(pol):
        ratio = torch.exp(query_log_probs(pol) - old_log_probs)
        value = torch.minimum(ratio * query_adv, ratio.clamp(0.7, 1.3) * query_adv)
        return float(masked_mean(value, query.mask).mean())

    assert clipped(policy) > clipped(old_policy) + 1e-3
    assert clipped(policy) == pytest.approx(metrics["loss/clip_objective_after"], rel=1e-6)


def test_promp_state_dict_roundtrip_continues_identically():
    config = MAMLConfig(outer="promp", promp=ProMPConfig(steps=2))
    support1, query1 = batch(seed=1)
    support2, query2 = batch(seed=2)
    reference = MAMLLearner(make_policy(), config, "cpu")
    reference.meta_update([support1], query1)
    state = reference.state_dict()
    assert state and all(key.startswith("promp_adam/") for key in state)
    assert all(isinstance(value, torch.Tensor) for value in state.values())

    resumed_policy = make_policy()
    resumed_policy.load_state_dict(reference.policy.state_dict())
    resumed = MAMLLearner(resumed_policy, config, "cpu")
    resumed.load_state_dict(state)
    reference.meta_update([support2], query2)
    resumed.meta_update([support2], query2)
    for name, value in reference.policy.state_dict().items():
        torch.testing.assert_close(resumed.policy.state_dict()[name], value, rtol=0, atol=0)
    with pytest.raises(ValueError, match="unexpected learner state key"):
        resumed.load_state_dict({"bogus": torch.zeros(1)})
    assert MAMLLearner(make_policy(), MAMLConfig(), "cpu").state_dict() == {}


def test_adapted_params_do_not_mutate_and_match_adapt():
    config = MAMLConfig(inner_lr=0.2)
    policy = make_policy()
    support, _ = batch()
    before = snapshot(policy)
    learner = MAMLLearner(policy, config, "cpu")
    params = learner.adapted_params([support, support], lrs=[0.2, 0.1])
    assert all(
        value.shape[0] == support.num_tasks and not value.requires_grad for value in params.values()
    )
    expected = adapt(policy, policy.params(), [support, support], [0.2, 0.1])
    for name in params:
        torch.testing.assert_close(params[name], expected[name].detach())
    for name, value in snapshot(policy).items():
        assert torch.equal(value, before[name])


def test_meta_update_accepts_float32_episodes_and_multi_step_support():
    config = MAMLConfig(inner_steps=2)
    policy = make_policy(dtype=torch.float32)
    support, query = batch(dtype=torch.float32)
    learner = MAMLLearner(policy, config, torch.device("cpu"))
    second = learner.adapted_params([support])
    assert second["log_std"].dtype == torch.float32
    metrics = learner.meta_update([support, support], query)
    assert all(key.split("/")[0] in ("loss", "train", "time") for key in metrics)
    with pytest.raises(ValueError, match="inner_steps=2"):
        learner.meta_update([support], query)
