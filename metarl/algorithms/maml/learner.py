"""MAML for policy gradients: the meta-learner (inner adaptation + outer update).

One meta-iteration, as the trainer drives it:

1. sample support episodes of ``T`` tasks with the meta-parameters θ
   (for ``k`` inner steps: support ``j`` with the parameters after ``j`` steps,
   obtained from :meth:`MAMLLearner.adapted_params`);
2. sample query episodes with the adapted parameters θ'_i = U_i(θ);
3. :meth:`MAMLLearner.meta_update` changes θ to improve the post-adaptation
   objective on the query episodes.

The inner loop U is :func:`metarl.algorithms.adaptation.adapt` (all tasks at once, inner
objective ``vpg`` or ``lvc``). The meta-gradient goes through the adaptation
(second order) unless ``first_order=True``. Outer updates:

- ``"trpo"`` (MAML paper): maximise the likelihood-ratio surrogate
  ``mean_i mean_t[π_θ'_i(a|s) / π_old'_i(a|s) A_t]`` on the query episodes
  subject to ``mean_i KL(π_old'_i || π_θ'_i) <= max_kl``, where both the
  surrogate and the KL are functions of θ through the adaptation. The step is
  ``sqrt(2δ / d^T H d) d`` with ``d`` from ``cg_iters`` conjugate-gradient
  iterations on Hessian-vector products of that KL (for one inner step or
  first order the exact ``sum_i J_i F_i J_i v`` at θ_old, with ``J_i`` the
  symmetric Jacobian of task i's adaptation and ``F_i`` the Fisher of its
  adapted policy, computed in closed form from forward passes cached once per
  meta-update, :class:`_ClosedFormTRPO`; for several second-order inner steps
  double backward through the adaptation graph, third order; ``cg_subsample``
  < 1 takes the curvature from the first tasks only), followed by a
  backtracking line search that re-adapts at each candidate θ and accepts the
  first one that improves the surrogate and keeps the exact KL within the
  bound (otherwise θ is left unchanged).
- ``"promp"`` (ProMP): maximise the clipped likelihood-ratio objective
  ``mean_t[min(r A, clip(r, 1-ε, 1+ε) A)]`` on the query episodes minus
  ``promp_kl_coef * sum_j KL(π_θj,old || π_θj)`` (the KL of each inner step's
  pre-update policy, on that step's support episodes) with ``promp_steps``
  Adam steps per meta-batch, re-adapting at every step. With ``lvc`` the inner
  objective importance-weights by the sampling policy, as in ProMP.

Advantages (linear feature baseline per task, GAE, per-task normalisation)
are computed once per meta-update from the data. Everything runs on the
device given to the learner; tensors of the episodes are moved there.

References: Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for Fast
Adaptation of Deep Networks" (MAML-TRPO, code cbfinn/maml_rl); Rothfuss,
Lee, Clavera, Asfour, Abbeel 2019, "ProMP: Proximal Meta-Policy Search";
Schulman et al. 2015 (TRPO).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import torch

from metarl.algorithms.adaptation import (
    OBJECTIVES,
    InnerStepResult,
    as_task_params,
    estimate_advantages,
    inner_step_with_outputs,
    masked_mean,
)
from metarl.algorithms.maml.curvature import GaussianFisher, LikelihoodLossHessian, TaskMLP
from metarl.algorithms.trust_region import (
    backtracking_line_search,
    flatten,
    hessian_vector_product_fn,
    trust_region_step,
    unflatten,
)
from metarl.core.episodes import Episodes
from metarl.core.policy import (
    GaussianMLPPolicy,
    Params,
    batched_policy_forward,
    gaussian_kl,
    gaussian_log_prob,
)
from metarl.core.validation import is_finite_number

OUTER_ALGORITHMS = ("trpo", "promp")


@dataclasses.dataclass(frozen=True)
class MAMLConfig:
    """Hyperparameters of the MAML meta-learner (defaults: the MAML paper's, ProMP's for promp)."""

    inner_lr: float = 0.1
    """Inner-loop (adaptation) learning rate α; > 0."""
    inner_steps: int = 1
    """Number of inner policy-gradient steps during meta-training; >= 1."""
    inner_objective: str = "vpg"
    """Inner-loop objective: "vpg" (MAML's surrogate) or "lvc" (ProMP's low-variance curvature)."""
    first_order: bool = False
    """Treat the inner gradient as a constant in the meta-gradient (first-order MAML)."""
    outer: str = "trpo"
    """Outer update: "trpo" (MAML paper) or "promp" (clipped objective + inner KL penalty, Adam)."""
    max_kl: float = 0.01
    """TRPO trust-region radius δ on the mean post-adaptation KL; > 0."""
    cg_iters: int = 10
    """TRPO conjugate-gradient iterations; >= 1."""
    cg_damping: float = 1e-5
    """Damping added to the KL Hessian-vector products (rllab: 1e-5); >= 0."""
    cg_subsample: float = 1.0
    """Fraction of the meta-batch's tasks (the first ones) whose KL curvature the CG uses; in (0, 1].
    Below 1 trades a noisier Hessian for speed (rllab's subsample_factor); the line search
    still checks the exact KL on all tasks."""
    line_search_steps: int = 15
    """Maximum step fractions tried by the TRPO line search; >= 1."""
    line_search_backtrack: float = 0.8
    """Factor the TRPO step shrinks by at each line-search step; in (0, 1)."""
    promp_clip_eps: float = 0.3
    """ProMP likelihood-ratio clipping ε; in (0, 1)."""
    promp_kl_coef: float = 5e-4
    """ProMP weight η of the inner-step KL penalty; >= 0."""
    promp_steps: int = 5
    """ProMP Adam steps per meta-batch; >= 1."""
    promp_lr: float = 1e-3
    """ProMP Adam learning rate; > 0."""
    discount: float = 0.99
    """Discount γ of returns and advantages; in [0, 1]."""
    gae_lambda: float = 1.0
    """GAE λ (1.0: Monte-Carlo returns minus the baseline, as MAML); in [0, 1]."""
    normalize_advantages: bool = True
    """Centre and scale advantages per task (rllab's center_adv)."""

    def __post_init__(self) -> None:
        def require(field: str, ok: bool, allowed: str) -> None:
            if not ok:
                raise ValueError(
                    f"MAMLConfig.{field} must be {allowed}, got {getattr(self, field)!r}"
                )

        def is_int(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        is_number = is_finite_number

        for field in ("inner_lr", "max_kl", "promp_lr"):
            require(
                field, is_number(getattr(self, field)) and getattr(self, field) > 0, "a finite number > 0"
            )
        for field in ("cg_damping", "promp_kl_coef"):
            require(
                field,
                is_number(getattr(self, field)) and getattr(self, field) >= 0,
                "a finite number >= 0",
            )
        for field in ("inner_steps", "cg_iters", "line_search_steps", "promp_steps"):
            require(
                field, is_int(getattr(self, field)) and getattr(self, field) >= 1, "an integer >= 1"
            )
        for field in ("discount", "gae_lambda"):
            require(
                field,
                is_number(getattr(self, field)) and 0 <= getattr(self, field) <= 1,
                "in [0, 1]",
            )
        require(
            "cg_subsample", is_number(self.cg_subsample) and 0 < self.cg_subsample <= 1, "in (0, 1]"
        )
        for field in ("line_search_backtrack", "promp_clip_eps"):
            require(
                field, is_number(getattr(self, field)) and 0 < getattr(self, field) < 1, "in (0, 1)"
            )
        for field in ("first_order", "normalize_advantages"):
            require(field, isinstance(getattr(self, field), bool), "True or False")
        require("inner_objective", self.inner_objective in OBJECTIVES, f"one of {OBJECTIVES}")
        require("outer", self.outer in OUTER_ALGORITHMS, f"one of {OUTER_ALGORITHMS}")


@dataclasses.dataclass
class _Batch:
    """One meta-batch on the learner's device, with its data-only statistics."""

    support: list[Episodes]
    query: Episodes
    support_advantages: list[torch.Tensor]  # each [T, E, H]
    query_advantages: torch.Tensor  # [T, E, H]

    def first_tasks(self, n: int) -> _Batch:
        """The same batch restricted to its first ``n`` tasks."""
        return _Batch(
            [episodes.task_slice(slice(0, n)) for episodes in self.support],
            self.query.task_slice(slice(0, n)),
            [advantages[:n] for advantages in self.support_advantages],
            self.query_advantages[:n],
        )


@dataclasses.dataclass
class _PostAdaptation:
    """The adaptation chain from some θ and the adapted policy on the query episodes."""

    steps: list[InnerStepResult]
    query_mean: torch.Tensor  # [T, E, H, A]
    query_log_std: torch.Tensor  # [T, A]
    query_log_probs: torch.Tensor  # [T, E, H]
    initial_params: Params | None = None
    """Per-task θ ``[T, ...]`` the chain started from (a view of the shared θ)."""
    query_params: Params | None = None
    """Parameters the query outputs were computed with: the adapted ones, or a detached
    leaf copy of them when the graph was cut there (see ``MAMLLearner._post_adaptation``)."""

    def first_tasks(self, n: int) -> _PostAdaptation:
        """The same quantities for the first ``n`` tasks."""
        return _PostAdaptation(
            [
                InnerStepResult(
                    {k: v[:n] for k, v in step.params.items()},
                    step.mean[:n],
                    step.log_std[:n],
                    step.log_probs[:n],
                )
                for step in self.steps
            ],
            self.query_mean[:n],
            self.query_log_std[:n],
            self.query_log_probs[:n],
        )


class MAMLLearner:
    """Meta-learner for a :class:`GaussianMLPPolicy` (see the module docstring).

    Args:
        policy: the meta-policy; its parameters are θ. It is moved to ``device``
            once here; adaptation never mutates it, :meth:`meta_update` changes
            its parameters in place.
        config: hyperparameters.
        device: where all computation runs (CPU or CUDA).
    """

    def __init__(
        self, policy: GaussianMLPPolicy, config: MAMLConfig, device: torch.device | str
    ) -> None:
        self.device = torch.device(device)
        self.policy = policy.to(self.device)
        self.config = config
        self.dtype = next(policy.parameters()).dtype
        self.optimizer = (
            torch.optim.Adam(self.policy.parameters(), lr=config.promp_lr)
            if config.outer == "promp"
            else None
        )

    # ------------------------------------------------------------------ data

    def _prepare(self, episodes: Episodes) -> Episodes:
        """The episodes on the learner's device, in the policy's floating dtype."""
        return dataclasses.replace(
            episodes,
            observations=episodes.observations.to(self.device, self.dtype),
            actions=episodes.actions.to(self.device, self.dtype),
            rewards=episodes.rewards.to(self.device, self.dtype),
            mask=episodes.mask.to(self.device, self.dtype),
        )

    def _advantages(self, episodes: Episodes) -> torch.Tensor:
        config = self.config
        return estimate_advantages(
            episodes, config.discount, config.gae_lambda, config.normalize_advantages
        )

    def _batch(self, support: Sequence[Episodes], query: Episodes) -> _Batch:
        if len(support) != self.config.inner_steps:
            raise ValueError(
                f"meta_update needs one support batch per inner step (inner_steps={self.config.inner_steps}), "
                f"got {len(support)}"
            )
        support = [self._prepare(episodes) for episodes in support]
        query = self._prepare(query)
        for j, episodes in enumerate(support):
            if episodes.num_tasks != query.num_tasks:
                raise ValueError(
                    f"support[{j}] has {episodes.num_tasks} tasks but the query episodes have {query.num_tasks}"
                )
        return _Batch(
            support,
            query,
            [self._advantages(episodes) for episodes in support],
            self._advantages(query),
        )

    # ------------------------------------------------------------ adaptation

    def adapted_params(
        self, support: Sequence[Episodes], lrs: Sequence[float] | None = None
    ) -> Params:
        """Detached fast weights after ``len(support)`` inner steps, for sampling.

        Args:
            support: ``support[j]`` collected with the parameters after ``j`` steps.
            lrs: inner lr of each step (default ``config.inner_lr`` for all;
                the evaluation protocol halves later steps).

        Returns:
            Per-task parameters ``[tasks, ...]`` (no gradient).
        """
        if len(support) == 0:
            raise ValueError("adapted_params needs at least one support batch")
        lrs = [self.config.inner_lr] * len(support) if lrs is None else list(lrs)
        if len(lrs) != len(support):
            raise ValueError(
                f"lrs has {len(lrs)} entries but support has {len(support)}; give one lr per step"
            )
        support = [self._prepare(episodes) for episodes in support]
        task_params = as_task_params(self.policy, self.policy.params(), support[0].num_tasks)
        with torch.no_grad():
            for episodes, lr in zip(support, lrs, strict=True):
                task_params = inner_step_with_outputs(
                    self.policy,
                    task_params,
                    episodes,
                    lr,
                    self.config.inner_objective,
                    advantages=self._advantages(episodes),
                ).params
        return task_params

    def _adapt_closed_form(
        self,
        params: Params,
        support: Sequence[Episodes],
        support_advantages: Sequence[torch.Tensor],
        lrs: Sequence[float],
        old_support_log_probs: Sequence[torch.Tensor] | None = None,
        query: Episodes | None = None,
    ) -> tuple[_PostAdaptation, list[TaskMLP], TaskMLP | None]:
        """The inner steps from θ = ``params`` (no graph), with the inner gradients in closed form.

        Computes what :meth:`_post_adaptation` computes with ``create_graph=False``
        under ``torch.no_grad`` (the inner-loss gradient from
        :mod:`metarl.algorithms.maml.curvature` instead of autograd) and keeps the cached
        forward passes, which the closed-form curvature then reuses. (Where nothing
        is reused, e.g. the line search, :meth:`_post_adaptation` is the cheaper of
        the two: its forward keeps less.) Must run under ``torch.no_grad``.

        Returns:
            The adaptation (query outputs only if ``query`` is given; zero-size
            placeholders otherwise), the support networks (at the parameters
            before each step) and the query network (at the adapted parameters).
        """
        config = self.config
        task_params = as_task_params(
            self.policy, {k: v.detach() for k, v in params.items()}, support[0].num_tasks
        )
        steps, support_mlps = [], []
        for j, (episodes, lr) in enumerate(zip(support, lrs, strict=True)):
            mlp = TaskMLP(self.policy, task_params, episodes.observations)
            loss = LikelihoodLossHessian(
                mlp,
                episodes.actions,
                -support_advantages[j] * _per_task_weights(episodes.mask),
                likelihood_ratio=config.inner_objective == "lvc",
                old_log_probs=None if old_support_log_probs is None else old_support_log_probs[j],
            )
            gradient = loss.gradient()
            adapted = {name: value - lr * gradient[name] for name, value in task_params.items()}
            steps.append(
                InnerStepResult(
                    adapted,
                    mlp.mean.view(*episodes.actions.shape),
                    mlp.log_std,
                    loss.log_probs.view(episodes.mask.shape),
                )
            )
            support_mlps.append(mlp)
            task_params = adapted
        if query is None:
            empty = task_params["log_std"].new_empty(0)
            return _PostAdaptation(steps, empty, empty, empty), support_mlps, None
        query_mlp = TaskMLP(self.policy, task_params, query.observations)
        mean = query_mlp.mean.view(*query.actions.shape)  # [T, E, H, A]
        log_probs = gaussian_log_prob(mean, query_mlp.log_std[:, None, None, :], query.actions)
        post = _PostAdaptation(steps, mean, query_mlp.log_std, log_probs, query_params=task_params)
        return post, support_mlps, query_mlp

    def _post_adaptation(
        self,
        params: Params,
        batch: _Batch,
        create_graph: bool,
        old_support_log_probs: list[torch.Tensor] | None = None,
        cut_at_adapted: bool = False,
    ) -> _PostAdaptation:
        """Adapt from θ = ``params`` on the support batches and evaluate on the query observations.

        With ``cut_at_adapted`` the query outputs are computed from a detached leaf
        copy of the adapted parameters, so that the query part (∂/∂θ') and the
        adaptation part (∂θ'/∂θ) of the graph can be differentiated separately.
        """
        task_params = as_task_params(self.policy, params, batch.query.num_tasks)
        initial_params = task_params
        steps = []
        for j, episodes in enumerate(batch.support):
            result = inner_step_with_outputs(
                self.policy,
                task_params,
                episodes,
                self.config.inner_lr,
                self.config.inner_objective,
                create_graph=create_graph,
                advantages=batch.support_advantages[j],
                old_log_probs=None if old_support_log_probs is None else old_support_log_probs[j],
            )
            steps.append(result)
            task_params = result.params
        if cut_at_adapted:
            task_params = {
                name: value.detach().requires_grad_(True) for name, value in task_params.items()
            }
        mean, log_std = batched_policy_forward(self.policy, task_params, batch.query.observations)
        log_probs = gaussian_log_prob(mean, log_std[:, None, None, :], batch.query.actions)
        return _PostAdaptation(steps, mean, log_std, log_probs, initial_params, task_params)

    # ---------------------------------------------------------------- update

    def meta_update(self, support: Sequence[Episodes], query: Episodes) -> dict[str, float]:
        """One outer step on a meta-batch; changes the policy's parameters in place.

        Args:
            support: ``config.inner_steps`` batches; ``support[j]`` collected with
                the parameters after ``j`` inner steps (``[tasks, episodes, H, ...]``).
            query: episodes collected with the fully adapted parameters.

        Returns:
            Metrics (``loss/``, ``train/``, ``time/`` keys).
        """
        start = time.perf_counter()
        batch = self._batch(support, query)
        if self.config.outer == "trpo":
            metrics = self._trpo_update(batch)
        else:
            metrics = self._promp_update(batch)
        metrics["train/support_return"] = float(batch.support[0].returns.mean())
        metrics["train/query_return"] = float(batch.query.returns.mean())
        metrics["time/meta_update_s"] = time.perf_counter() - start
        return metrics

    def _query_terms(
        self, post: _PostAdaptation, batch: _Batch, old: _PostAdaptation
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Likelihood-ratio surrogate and KL(old || new), both averaged over steps then tasks."""
        mask = batch.query.mask
        ratio = torch.exp(post.query_log_probs - old.query_log_probs)  # [T, E, H]
        surrogate = masked_mean(ratio * batch.query_advantages, mask).mean()
        kl = gaussian_kl(
            old.query_mean,
            old.query_log_std[:, None, None, :],
            post.query_mean,
            post.query_log_std[:, None, None, :],
        )  # [T, E, H]
        return surrogate, masked_mean(kl, mask).mean()

    def _trpo_update(self, batch: _Batch) -> dict[str, float]:
        config = self.config
        names = [name for name, _ in self.policy.named_parameters()]
        params = self.policy.params()
        param_list = [params[name] for name in names]

        graph_start = time.perf_counter()
        num_tasks = batch.query.num_tasks
        lrs = [config.inner_lr] * config.inner_steps
        curvature_tasks = max(1, math.ceil(config.cg_subsample * num_tasks))
        # The adaptation's Jacobian J = ∂θ'/∂θ is symmetric for one inner step (I - α ∇²L_inner)
        # and the identity at first order; then the KL Hessian at θ_old is exactly J^T F J
        # (F: Fisher of the adapted policy, the KL's gradient vanishes there), and the gradient
        # and every product are computed in closed form (metarl.algorithms.maml.curvature).
        closed_form = config.first_order or config.inner_steps == 1
        if closed_form:
            with torch.no_grad():
                old, support_mlps, query_mlp = self._adapt_closed_form(
                    params, batch.support, batch.support_advantages, lrs, query=batch.query
                )
                surrogate_before = float(
                    masked_mean(batch.query_advantages, batch.query.mask).mean()
                )  # the likelihood ratio is 1 at θ_old
                model = _ClosedFormTRPO(support_mlps[0], query_mlp, batch, config)
                gradient = model.surrogate_gradient()
                if curvature_tasks < num_tasks:  # the KL curvature of the first tasks only
                    sub_batch = batch.first_tasks(curvature_tasks)
                    _, support_mlps, query_mlp = self._adapt_closed_form(
                        params,
                        sub_batch.support,
                        sub_batch.support_advantages,
                        lrs,
                        query=sub_batch.query,
                    )
                    model = _ClosedFormTRPO(support_mlps[0], query_mlp, sub_batch, config)
                step = trust_region_step(
                    gradient,
                    model.kl_hessian_product,
                    config.max_kl,
                    config.cg_iters,
                    quadratic_form=model.kl_quadratic_form,
                )
            del model, support_mlps, query_mlp
        else:  # several second-order inner steps: double backward through the adaptation graph
            post = self._post_adaptation(params, batch, True)
            old = _detached(post)
            surrogate, kl = self._query_terms(post, batch, old)
            surrogate_before = float(surrogate.detach())
            gradient = flatten(torch.autograd.grad(surrogate, param_list, retain_graph=True))
            if curvature_tasks < num_tasks:
                del post, kl
                sub_batch = batch.first_tasks(curvature_tasks)
                post = self._post_adaptation(params, sub_batch, True)
                _, kl = self._query_terms(post, sub_batch, old.first_tasks(curvature_tasks))
            kl_gradient = torch.autograd.grad(kl, param_list, create_graph=True)
            hvp = hessian_vector_product_fn(kl_gradient, param_list, config.cg_damping)
            step = trust_region_step(gradient, hvp, config.max_kl, config.cg_iters)
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
                candidate_post = self._post_adaptation(
                    candidate, batch, False, old_support_log_probs
                )
                new_surrogate, new_kl = self._query_terms(candidate_post, batch, old)
            return float(new_surrogate), float(new_kl)

        result = backtracking_line_search(
            evaluate,
            surrogate_before,
            config.max_kl,
            config.line_search_backtrack,
            config.line_search_steps,
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
            "train/inner_loss": _inner_loss_metric(old, batch),
            "time/trust_region_s": cg_seconds,
            "time/line_search_s": time.perf_counter() - search_start,
        }

    def _promp_objective(
        self, post: _PostAdaptation, batch: _Batch, old: _PostAdaptation
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ProMP's objective to maximise, with its clipped and inner-KL parts."""
        eps = self.config.promp_clip_eps
        ratio = torch.exp(post.query_log_probs - old.query_log_probs)  # [T, E, H]
        advantages = batch.query_advantages
        clipped = torch.minimum(ratio * advantages, ratio.clamp(1.0 - eps, 1.0 + eps) * advantages)
        clip_objective = masked_mean(clipped, batch.query.mask).mean()
        inner_kl = sum(
            masked_mean(
                gaussian_kl(
                    old_step.mean,
                    old_step.log_std[:, None, None, :],
                    new_step.mean,
                    new_step.log_std[:, None, None, :],
                ),
                episodes.mask,
            ).mean()
            for old_step, new_step, episodes in zip(
                old.steps, post.steps, batch.support, strict=True
            )
        )
        return clip_objective - self.config.promp_kl_coef * inner_kl, clip_objective, inner_kl

    def _promp_update(self, batch: _Batch) -> dict[str, float]:
        assert self.optimizer is not None
        params = self.policy.params()
        old: _PostAdaptation | None = None
        history: list[tuple[float, float, float]] = []
        for _ in range(self.config.promp_steps):
            post = self._post_adaptation(
                params,
                batch,
                create_graph=not self.config.first_order,
                old_support_log_probs=None if old is None else [s.log_probs for s in old.steps],
            )
            if old is None:  # the first pass is at the sampling parameters
                old = _detached(post)
            objective, clip_objective, inner_kl = self._promp_objective(post, batch, old)
            history.append(
                (
                    float(objective.detach()),
                    float(clip_objective.detach()),
                    float(inner_kl.detach()),
                )
            )
            self.optimizer.zero_grad(set_to_none=True)
            (-objective).backward()
            self.optimizer.step()
        with torch.no_grad():
            final = self._post_adaptation(params, batch, False, [s.log_probs for s in old.steps])
            objective, clip_objective, inner_kl = self._promp_objective(final, batch, old)
            _, query_kl = self._query_terms(final, batch, old)
        self.optimizer.zero_grad(set_to_none=True)
        return {
            "loss/objective_before": history[0][0],
            "loss/objective_after": float(objective),
            "loss/clip_objective_after": float(clip_objective),
            "loss/inner_kl": float(inner_kl),
            "loss/kl": float(query_kl),
            "train/inner_loss": _inner_loss_metric(old, batch),
        }

    # ---------------------------------------------------------------- resume

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Learner state beyond the policy weights, as a flat dict of tensors (safetensors-ready).

        For ``promp``: the Adam moments and step counts, keyed
        ``"promp_adam/<param name>/<state key>"``; empty for ``trpo``.
        """
        if self.optimizer is None:
            return {}
        state: dict[str, torch.Tensor] = {}
        for name, param in self.policy.named_parameters():
            for key, value in self.optimizer.state.get(param, {}).items():
                tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
                state[f"promp_adam/{name}/{key}"] = tensor.detach().clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned (tensors may be on any device).

        Raises:
            ValueError: if the keys do not belong to this learner's outer algorithm
                or parameters.
        """
        if self.optimizer is None:
            if state:
                raise ValueError(f"a trpo learner has no state, got keys {sorted(state)[:3]}...")
            return
        names = [name for name, _ in self.policy.named_parameters()]
        per_param: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            prefix, _, rest = key.partition("/")
            name, _, field = rest.rpartition("/")
            if prefix != "promp_adam" or name not in names:
                raise ValueError(
                    f"unexpected learner state key {key!r} (expected promp_adam/<param name>/<key>)"
                )
            per_param.setdefault(name, {})[field] = value
        optimizer_state = self.optimizer.state_dict()
        optimizer_state["state"] = {
            index: {
                field: value.to(self.device) if field != "step" else value.cpu()
                for field, value in per_param[name].items()
            }
            for index, name in enumerate(names)
            if name in per_param
        }
        self.optimizer.load_state_dict(optimizer_state)


def _detached(post: _PostAdaptation) -> _PostAdaptation:
    """A copy without autograd history (the "old" policy of a meta-update)."""
    return _PostAdaptation(
        [
            InnerStepResult(
                {name: value.detach() for name, value in step.params.items()},
                step.mean.detach(),
                step.log_std.detach(),
                step.log_probs.detach(),
            )
            for step in post.steps
        ],
        post.query_mean.detach(),
        post.query_log_std.detach(),
        post.query_log_probs.detach(),
    )


def _inner_loss_metric(old: _PostAdaptation, batch: _Batch) -> float:
    """Mean pre-adaptation advantage-weighted log-likelihood loss (first inner step)."""
    log_probs = old.steps[0].log_probs
    return float(
        -masked_mean(log_probs * batch.support_advantages[0], batch.support[0].mask).mean()
    )


def _gauss_newton_product_fn(
    post: _PostAdaptation,
    names: list[str],
    param_list: list[torch.Tensor],
    kl: torch.Tensor,
    damping: float,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> J^T F J v + damping v`` for the KL through a one-step (or first-order) adaptation.

    The autograd reference for :class:`_ClosedFormTRPO` (used by the tests, not by
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


class _ClosedFormTRPO:
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
        config: ``inner_lr``, ``inner_objective``, ``first_order``, ``cg_damping``.
    """

    def __init__(
        self, support_mlp: TaskMLP, query_mlp: TaskMLP, batch: _Batch, config: MAMLConfig
    ) -> None:
        self.names = list(support_mlp.task_params)
        self.shapes = [support_mlp.task_params[name].shape[1:] for name in self.names]
        self.inner_lr = config.inner_lr
        self.damping = config.cg_damping
        query = batch.query
        num_tasks = query.num_tasks
        self.num_tasks = num_tasks
        self.inner: LikelihoodLossHessian | None = None
        if not config.first_order:
            support = batch.support[0]
            self.inner = LikelihoodLossHessian(
                support_mlp,
                support.actions,
                -batch.support_advantages[0] * _per_task_weights(support.mask),
                likelihood_ratio=config.inner_objective == "lvc",
            )
        query_weights = _per_task_weights(query.mask) / num_tasks  # [T, E, H]: mean over tasks
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


def _per_task_weights(mask: torch.Tensor) -> torch.Tensor:
    """``mask / count`` per task: the weights of :func:`metarl.algorithms.adaptation.masked_mean`  # [T, ...]."""
    dims = tuple(range(1, mask.dim()))
    return mask / mask.sum(dim=dims, keepdim=True).clamp(min=1.0)
