"""MAML-TRPO's KL curvature product three ways, side by side on one real meta-batch.

The product ``v -> (sum_i J_i F_i J_i + damping) v`` that TRPO's conjugate
gradient calls about eleven times per meta-update (one inner step, second
order), computed

1. by autograd double backward through the (cut) adaptation graph
   (:func:`metarl.algorithms.maml.trpo.gauss_newton_product_fn`, the reference the tests use),
2. with ``torch.func``: forward over reverse (``jvp`` of ``grad``) for the
   inner-loss Hessian, ``jvp``/``vjp`` of the adapted policy's mean for the Fisher,
3. in closed form from cached forward passes (:class:`metarl.algorithms.maml.trpo.ClosedFormTRPO`,
   what ``MAMLLearner`` uses).

It samples one meta-batch at the family's paper config (initial policy, seed 0)
and prints the CPU seconds of building each and of one product (median of
``--repeats``), and how far 2 and 3 are from 1.

Usage: python scripts/compare_maml_curvature.py [--family Point2DNav] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.func import grad, jvp, vjp

import metarl_envs as envs
from metarl.algorithms.maml.batch import MetaBatch as _Batch
from metarl.algorithms.maml.batch import detached as _detached
from metarl.algorithms.maml.batch import per_task_weights as _per_task_weights
from metarl.algorithms.maml.batch import query_terms
from metarl.algorithms.maml.learner import MAMLLearner
from metarl.algorithms.maml.training import initial_policy
from metarl.algorithms.maml.trpo import ClosedFormTRPO as _ClosedFormTRPO
from metarl.algorithms.maml.trpo import gauss_newton_product_fn as _gauss_newton_product_fn
from metarl.algorithms.presets import MAMLRunConfig, maml_preset
from metarl.core.policy import (
    GaussianMLPPolicy,
    batched_policy_forward,
    gaussian_log_prob,
    stack_params,
)
from metarl.core.sampler import VectorEnvSampler

Product = Callable[[torch.Tensor], torch.Tensor]


def sample_batch(config: MAMLRunConfig) -> tuple[MAMLLearner, _Batch]:
    """One meta-batch (support with θ, query with the adapted θ') at ``config``."""
    policy = initial_policy(config, seed=0)
    learner = MAMLLearner(policy, config.maml, "cpu")
    sampler = VectorEnvSampler(config.family, config.meta_batch_size, "cpu", horizon=config.horizon)
    tasks = envs.distribution(config.family).sample(
        config.meta_batch_size, "train", np.random.default_rng(0)
    )
    generator = torch.Generator().manual_seed(0)
    shared = stack_params({k: v.detach() for k, v in policy.params().items()}, len(tasks))
    support = sampler.sample(policy, shared, tasks, config.episodes_per_task, generator)
    adapted = learner.adapted_params([support])
    query = sampler.sample(policy, adapted, tasks, config.episodes_per_task, generator)
    sampler.close()
    return learner, learner.batch([support], query)


def autograd_product(learner: MAMLLearner, batch: _Batch) -> Product:
    """1: double backward through the adaptation graph (built once)."""
    params = learner.policy.params()
    names = list(params)
    post = learner.post_adaptation(params, batch, True, cut_at_adapted=True)
    _, kl = query_terms(post, batch, _detached(post))
    return _gauss_newton_product_fn(
        post, names, [params[n] for n in names], kl, learner.config.trpo.cg_damping
    )


def torch_func_product(learner: MAMLLearner, batch: _Batch) -> Product:
    """2: ``J v = v - α jvp(grad L)(v)``, ``F u`` by ``jvp`` then ``vjp`` of the query mean."""
    policy: GaussianMLPPolicy = learner.policy
    config = learner.config
    names = [name for name, _ in policy.named_parameters()]
    shapes = {name: value.shape for name, value in policy.named_parameters()}
    num_tasks = batch.query.num_tasks
    support, advantages = batch.support[0], batch.support_advantages[0]
    support_weights = advantages * _per_task_weights(support.mask)  # [T, E, H]
    query_weights = _per_task_weights(batch.query.mask) / num_tasks  # [T, E, H]
    theta = {  # jvp needs real (not expanded) tensors
        k: v.contiguous()
        for k, v in stack_params(
            {k: v.detach() for k, v in policy.params().items()}, num_tasks
        ).items()
    }

    def inner_loss(task_params: dict[str, torch.Tensor]) -> torch.Tensor:
        mean, log_std = batched_policy_forward(policy, task_params, support.observations)
        log_probs = gaussian_log_prob(mean, log_std[:, None, None, :], support.actions)
        return -(log_probs * support_weights).sum()

    inner_grad = grad(inner_loss)
    with torch.no_grad():
        gradient = inner_grad(theta)
        adapted = {k: theta[k] - config.inner_lr * gradient[k] for k in names}
        _, query_log_std = batched_policy_forward(policy, adapted, batch.query.observations)
    mean_scale = query_weights[..., None] * torch.exp(-2.0 * query_log_std)[:, None, None, :]

    def query_mean(task_params: dict[str, torch.Tensor]) -> torch.Tensor:
        return batched_policy_forward(policy, task_params, batch.query.observations)[0]

    def jacobian(tangent: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        _, hessian_tangent = jvp(inner_grad, (theta,), (tangent,))
        return {k: tangent[k] - config.inner_lr * hessian_tangent[k] for k in names}

    def product(vector: torch.Tensor) -> torch.Tensor:
        chunks = vector.split([shapes[k].numel() for k in names])
        tangent = {
            k: c.view(shapes[k]).expand(num_tasks, *shapes[k]).contiguous()
            for k, c in zip(names, chunks, strict=True)
        }
        u = jacobian(tangent)
        _, mean_tangent = jvp(query_mean, (adapted,), (u,))
        _, pullback = vjp(query_mean, adapted)
        (fisher_u,) = pullback(mean_scale * mean_tangent)
        fisher_u["log_std"] = 2.0 * query_weights.sum(dim=(1, 2))[:, None] * u["log_std"]
        result = jacobian(fisher_u)
        return torch.cat([result[k].sum(0).reshape(-1) for k in names]) + config.trpo.cg_damping * vector

    return product


def closed_form_product(learner: MAMLLearner, batch: _Batch) -> Product:
    """3: :class:`metarl.algorithms.maml.trpo.ClosedFormTRPO` on cached forward passes."""
    with torch.no_grad():
        _, support_mlps, query_mlp = learner.adapt_closed_form(
            learner.policy.params(),
            batch.support,
            batch.support_advantages,
            [learner.config.inner_lr],
            query=batch.query,
        )
        model = _ClosedFormTRPO(support_mlps[0], query_mlp, batch, learner.config)

    def product(vector: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.kl_hessian_product(vector)

    return product


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="Point2DNav", help="task family (paper config)")
    parser.add_argument("--repeats", type=int, default=3, help="products timed per method")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = maml_preset("paper", args.family)
    learner, batch = sample_batch(config)
    params = learner.policy.params()
    vector = torch.randn(
        sum(p.numel() for p in params.values()), generator=torch.Generator().manual_seed(1)
    )
    print(
        f"{args.family}: {config.meta_batch_size} tasks x {config.episodes_per_task} episodes x "
        f"{batch.query.horizon} steps, hidden {config.hidden_sizes}, 1 thread, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    results = {}
    builders = {
        "autograd double backward (reference)": autograd_product,
        "torch.func jvp(grad) + jvp/vjp": torch_func_product,
        "closed form (metarl.algorithms.maml.curvature)": closed_form_product,
    }
    for name, build in builders.items():
        start = time.process_time()
        product = build(learner, batch)
        setup = time.process_time() - start
        results[name] = product(vector)  # warm-up, kept for the comparison
        seconds = []
        for _ in range(args.repeats):
            start = time.process_time()
            product(vector)
            seconds.append(time.process_time() - start)
        print(
            f"  {name:<42} setup {setup:6.3f} s CPU, per product {statistics.median(seconds):6.3f} s CPU"
        )
    reference = results["autograd double backward (reference)"]
    for name, value in results.items():
        print(
            f"  |{name} - reference| / |reference| = {float((value - reference).norm() / reference.norm()):.1e}"
        )
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
