"""MAML's TRPO outer loop (the MAML paper's): a trust-region step through the adaptation.

Maximise the likelihood-ratio surrogate ``mean_i mean_t[π_θ'_i(a|s) / π_old'_i(a|s) A_t]``
on the query episodes subject to ``mean_i KL(π_old'_i || π_θ'_i) <= max_kl``, where both
the surrogate and the KL are functions of θ through the adaptation. The step is
``sqrt(2δ / d^T H d) d`` with ``d`` from ``cg_iters`` conjugate-gradient iterations on
Hessian-vector products of that KL: for one inner step or first order the exact
``sum_i J_i F_i J_i v`` at θ_old, with ``J_i`` the symmetric Jacobian of task i's
adaptation and ``F_i`` the Fisher of its adapted policy, computed in closed form from
forward passes cached once per meta-update (:class:`ClosedFormTRPO`); for several
second-order inner steps double backward through the adaptation graph, third order.
``cg_subsample`` < 1 takes the curvature from the first tasks only. A backtracking
line search then re-adapts at each candidate θ and accepts the first one that improves
the surrogate and keeps the exact KL within the bound (otherwise θ is left unchanged).

References: Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for Fast
Adaptation of Deep Networks" (MAML-TRPO, code cbfinn/maml_rl); Schulman et al. 2015 (TRPO).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from metarl.algorithms.adaptation import masked_mean
from metarl.algorithms.maml.batch import (
    MetaBatch,
    PostAdaptation,
    detached,
    inner_loss_metric,
    per_task_weights,
    query_terms,
)
from metarl.algorithms.maml.config import MAMLConfig
from metarl.algorithms.maml.curvature import GaussianFisher, LikelihoodLossHessian, TaskMLP
from metarl.algorithms.trust_region import (
    backtracking_line_search,
    flatten,
    hessian_vector_product_fn,
    trust_region_step,
    unflatten,
)
from metarl.core.policy import Params

if TYPE_CHECKING:
    from metarl.algorithms.maml.learner import MAMLLearner


class TRPOOuterLoop:
    """The ``trpo`` outer loop of a :class:`~metarl.algorithms.maml.learner.MAMLLearner` (no state).

    Args:
        learner: the learner whose policy this loop updates; its ``config.trpo`` holds
            the trust-region settings.
    """

    def __init__(self, learner: MAMLLearner) -> None:
        self.learner = learner

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Empty: TRPO keeps nothing between meta-updates."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Accept only the empty state (``ValueError`` otherwise)."""
        if state:
            raise ValueError(f"a trpo learner has no state, got keys {sorted(state)[:3]}...")

    def update(self, batch: MetaBatch) -> dict[str, float]:
        """One trust-region step on ``batch`` (see the module docstring); changes θ in place."""
        learner = self.learner
        config = learner.config
        trust = config.trpo
        names = [name for name, _ in learner.policy.named_parameters()]
        params = learner.policy.params()
        param_list = [params[name] for name in names]

        graph_start = time.perf_counter()
        num_tasks = batch.query.num_tasks
        lrs = [config.inner_lr] * config.inner_steps
        curvature_tasks = max(1, math.ceil(trust.cg_subsample * num_tasks))
        # The adaptation's Jacobian J = ∂θ'/∂θ is symmetric for one inner step (I - α ∇²L_inner)
        # and the identity at first order; then the KL Hessian at θ_old is exactly J^T F J
        # (F: Fisher of the adapted policy, the KL's gradient vanishes there), and the gradient
        # and every product are computed in closed form (metarl.algorithms.maml.curvature).
        closed_form = config.first_order or config.inner_steps == 1
        if closed_form:
            with torch.no_grad():
                old, support_mlps, query_mlp = learner.adapt_closed_form(
                    params, batch.support, batch.support_advantages, lrs, query=batch.query
                )
                surrogate_before = float(
                    masked_mean(batch.query_advantages, batch.query.mask).mean()
                )  # the likelihood ratio is 1 at θ_old
                model = ClosedFormTRPO(support_mlps[0], query_mlp, batch, config)
                gradient = model.surrogate_gradient()
                if curvature_tasks < num_tasks:  # the KL curvature of the first tasks only
                    sub_batch = batch.first_tasks(curvature_tasks)
                    _, support_mlps, query_mlp = learner.adapt_closed_form(
                        params,
                        sub_batch.support,
                        sub_batch.support_advantages,
                        lrs,
                        query=sub_batch.query,
                    )
                    model = ClosedFormTRPO(support_mlps[0], query_mlp, sub_batch, config)
                step = trust_region_step(
                    gradient,
                    model.kl_hessian_product,
                    trust.max_kl,
                    trust.cg_iters,
                    quadratic_form=model.kl_quadratic_form,
                )
            del model, support_mlps, query_mlp
        else:  # several second-order inner steps: double backward through the adaptation graph
            post = learner.post_adaptation(params, batch, True)
            old = detached(post)
            surrogate, kl = query_terms(post, batch, old)
            surrogate_before = float(surrogate.detach())
            gradient = flatten(torch.autograd.grad(surrogate, param_list, retain_graph=True))
            if curvature_tasks < num_tasks:
                del post, kl
                sub_batch = batch.first_tasks(curvature_tasks)
                post = learner.post_adaptation(params, sub_batch, True)
                _, kl = query_terms(post, sub_batch, old.first_tasks(curvature_tasks))
            kl_gradient = torch.autograd.grad(kl, param_list, create_graph=True)
            hvp = hessian_vector_product_fn(kl_gradient, param_list, trust.cg_damping)
            step = trust_region_step(gradient, hvp, trust.max_kl, trust.cg_iters)
            del post, kl, hvp, surrogate, kl_gradient  # free the graph before the line search
        cg_seconds = time.perf_counter() - graph_start

        search_start = time.perf_counter()
        start_vector = flatten([p.detach() for p in param_list])
        old_support_log_probs = [s.log_probs for s in old.steps]

        def evaluate(fraction: float) -> tuple[float, float]:
            with torch.no_grad():
                candidate = dict(
                    zip(
                        names,
                        unflatten(start_vector + fraction * step.step, param_list),
                        strict=True,
                    )
                )
                candidate_post = learner.post_adaptation(
                    candidate, batch, False, old_support_log_probs
                )
                new_surrogate, new_kl = query_terms(candidate_post, batch, old)
            return float(new_surrogate), float(new_kl)

        result = backtracking_line_search(
            evaluate,
            surrogate_before,
            trust.max_kl,
            trust.line_search_backtrack,
            trust.line_search_steps,
        )
        if result.accepted:
            with torch.no_grad():
                new_vector = start_vector + result.step_fraction * step.step
                for param, value in zip(param_list, unflatten(new_vector, param_list), strict=True):
                    param.copy_(value)
        return {
            "loss/surrogate_before": surrogate_before,
            "loss/surrogate_after": result.objective,
            "loss/kl": result.kl,
            "loss/expected_improvement": step.expected_improvement,
            "train/grad_norm": float(gradient.norm()),
            "train/step_accepted": float(result.accepted),
            "train/step_fraction": result.step_fraction,
            "train/line_search_evaluations": float(result.evaluations),
            "train/inner_loss": inner_loss_metric(old, batch),
            "time/trust_region_s": cg_seconds,
            "time/line_search_s": time.perf_counter() - search_start,
        }


def gauss_newton_product_fn(
    post: PostAdaptation,
    names: list[str],
    param_list: list[torch.Tensor],
    kl: torch.Tensor,
    damping: float,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> J^T F J v + damping v`` for the KL through a one-step (or first-order) adaptation.

    The autograd reference for :class:`ClosedFormTRPO` (used by the tests, not by
    the update). ``post`` must have been built with ``cut_at_adapted=True``. ``J v``
    is taken as the vector-Jacobian product ``J^T v`` per task (J symmetric), ``F u``
    as the Hessian-vector product of ``kl`` w.r.t. the cut adapted parameters (the
    Fisher at θ_old). Both graphs are built once and reused by every call.
    """
    assert post.query_params is not None and post.initial_params is not None
    query_params = [post.query_params[name] for name in names]
    initial = [post.initial_params[name] for name in names]  # [T, ...] views of θ
    adapted = [post.steps[-1].params[name] for name in names]
    num_tasks = initial[0].shape[0]
    kl_gradient = flatten(torch.autograd.grad(kl, query_params, create_graph=True))

    def product(vector: torch.Tensor) -> torch.Tensor:
        per_task = [
            v.unsqueeze(0).expand(num_tasks, *v.shape)
            for v in unflatten(vector.detach(), param_list)
        ]
        jacobian_vector = torch.autograd.grad(
            adapted, initial, grad_outputs=per_task, retain_graph=True
        )
        fisher_vector = torch.autograd.grad(
            kl_gradient @ flatten(jacobian_vector), query_params, retain_graph=True
        )
        back = torch.autograd.grad(
            adapted, param_list, grad_outputs=fisher_vector, retain_graph=True
        )
        return flatten(back) + damping * vector

    return product


class ClosedFormTRPO:
    """MAML-TRPO's gradient and KL curvature at θ_old for one inner step or first order.

    With ``θ'_i = θ - α ∇L_i(θ)`` the adaptation's Jacobian is ``J_i = I - α ∇²L_i``
    (symmetric; the identity at first order). At θ_old the surrogate's gradient is
    ``sum_i J_i ∇_θ'_i S`` and the Hessian of the mean post-adaptation KL is
    ``sum_i J_i F_i J_i`` (``F_i``: Fisher of the adapted policy on the query data,
    weighted as the mean KL). All factors come from
    :mod:`metarl.algorithms.maml.curvature` on forward passes cached here once, so a
    product costs two inner-loss Hessian-vector products and one Fisher product
    and builds no autograd graph. Must run under ``torch.no_grad``.

    Args:
        support_mlp: the network at θ_old on the first support batch (the
            inner step's loss; unused at first order).
        query_mlp: the network at θ'_old (after all inner steps) on the query batch.
        batch: the meta-batch of those networks.
        config: ``inner_lr``, ``inner_objective``, ``first_order``, ``trpo.cg_damping``.
    """

    def __init__(
        self, support_mlp: TaskMLP, query_mlp: TaskMLP, batch: MetaBatch, config: MAMLConfig
    ) -> None:
        self.names = list(support_mlp.task_params)
        self.shapes = [support_mlp.task_params[name].shape[1:] for name in self.names]
        self.inner_lr = config.inner_lr
        self.damping = config.trpo.cg_damping
        query = batch.query
        num_tasks = query.num_tasks
        self.num_tasks = num_tasks
        self.inner: LikelihoodLossHessian | None = None
        if not config.first_order:
            support = batch.support[0]
            self.inner = LikelihoodLossHessian(
                support_mlp,
                support.actions,
                -batch.support_advantages[0] * per_task_weights(support.mask),
                likelihood_ratio=config.inner_objective == "lvc",
            )
        query_weights = per_task_weights(query.mask) / num_tasks  # [T, E, H]: mean over tasks
        self.fisher = GaussianFisher(query_mlp, query_weights)
        # S = mean_i masked_mean_i(π'/π'_old A): its gradient at the old point is the
        # likelihood-ratio loss gradient with c_n = A_n w_n
        self.surrogate = LikelihoodLossHessian(
            query_mlp, query.actions, batch.query_advantages * query_weights, likelihood_ratio=True
        )

    def _jacobian_product(self, tangent: Params) -> Params:
        """``J_i v_i`` per task (``J_i`` symmetric, so also ``J_i^T v_i``)."""
        if self.inner is None:
            return tangent
        hessian = self.inner.hessian_product(tangent)
        return {name: tangent[name] - self.inner_lr * hessian[name] for name in self.names}

    def _per_task(self, vector: torch.Tensor) -> Params:
        """A flat θ-direction ``[n]`` as the same tangent for every task ``[T, ...]``."""
        chunks = vector.split([math.prod(shape) for shape in self.shapes])
        return {
            name: chunk.view(shape).expand(self.num_tasks, *shape)
            for name, chunk, shape in zip(self.names, chunks, self.shapes, strict=True)
        }

    def _task_sum(self, per_task: Params) -> torch.Tensor:
        """Sum over tasks, flattened in parameter order  # [n]."""
        return torch.cat([per_task[name].sum(dim=0).reshape(-1) for name in self.names])

    def surrogate_gradient(self) -> torch.Tensor:
        """``∇_θ S = sum_i J_i ∇_θ'_i S``  # [n]."""
        return self._task_sum(self._jacobian_product(self.surrogate.gradient()))

    def kl_hessian_product(self, vector: torch.Tensor) -> torch.Tensor:
        """``(sum_i J_i F_i J_i + damping) v``  # [n]."""
        fisher_vector = self.fisher.product(self._jacobian_product(self._per_task(vector)))
        return self._task_sum(self._jacobian_product(fisher_vector)) + self.damping * vector

    def kl_quadratic_form(self, vector: torch.Tensor) -> torch.Tensor:
        """``v^T (sum_i J_i F_i J_i + damping) v`` (scalar; forward mode only)."""
        per_task = self._jacobian_product(self._per_task(vector))
        return self.fisher.quadratic_form(per_task).sum() + self.damping * (vector @ vector)
