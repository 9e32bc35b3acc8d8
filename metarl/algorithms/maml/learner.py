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
(second order) unless ``first_order=True``. The outer update is one object per
algorithm behind one interface (:class:`~metarl.algorithms.maml.batch.OuterLoop`),
looked up by ``config.outer`` in :data:`OUTER_LOOPS`:

- ``"trpo"`` (MAML paper, :mod:`metarl.algorithms.maml.trpo`): a trust-region
  step on the likelihood-ratio surrogate of the query episodes, the KL taken
  through the adaptation, then a backtracking line search;
- ``"promp"`` (ProMP, :mod:`metarl.algorithms.maml.promp`): Adam steps on the
  clipped likelihood-ratio objective minus a penalty on the inner steps' KL.

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
import time
from collections.abc import Callable, Sequence

import torch

from metarl.algorithms.adaptation import (
    InnerStepResult,
    as_task_params,
    estimate_advantages,
    inner_step_with_outputs,
)
from metarl.algorithms.maml.batch import MetaBatch, OuterLoop, PostAdaptation, per_task_weights
from metarl.algorithms.maml.config import OUTER_ALGORITHMS, MAMLConfig
from metarl.algorithms.maml.curvature import LikelihoodLossHessian, TaskMLP
from metarl.algorithms.maml.promp import ProMPOuterLoop
from metarl.algorithms.maml.trpo import TRPOOuterLoop
from metarl.core.episodes import Episodes
from metarl.core.policy import (
    GaussianMLPPolicy,
    Params,
    batched_policy_forward,
    gaussian_log_prob,
)

__all__ = ["OUTER_ALGORITHMS", "OUTER_LOOPS", "MAMLConfig", "MAMLLearner"]

OUTER_LOOPS: dict[str, Callable[[MAMLLearner], OuterLoop]] = {"trpo": TRPOOuterLoop, "promp": ProMPOuterLoop}
"""Outer-loop name (``MAMLConfig.outer``) -> the class that runs it, built from the learner."""


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
        self.outer_loop = OUTER_LOOPS[config.outer](self)

    # ------------------------------------------------------------------ data

    def prepare(self, episodes: Episodes) -> Episodes:
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

    def batch(self, support: Sequence[Episodes], query: Episodes) -> MetaBatch:
        """The meta-batch of ``support`` (one batch per inner step) and ``query`` on this device,
        with its advantages (what the outer loops update from)."""
        if len(support) != self.config.inner_steps:
            raise ValueError(
                f"meta_update needs one support batch per inner step (inner_steps={self.config.inner_steps}), "
                f"got {len(support)}"
            )
        support = [self.prepare(episodes) for episodes in support]
        query = self.prepare(query)
        for j, episodes in enumerate(support):
            if episodes.num_tasks != query.num_tasks:
                raise ValueError(
                    f"support[{j}] has {episodes.num_tasks} tasks but the query episodes have {query.num_tasks}"
                )
        return MetaBatch(
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
        support = [self.prepare(episodes) for episodes in support]
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

    def adapt_closed_form(
        self,
        params: Params,
        support: Sequence[Episodes],
        support_advantages: Sequence[torch.Tensor],
        lrs: Sequence[float],
        old_support_log_probs: Sequence[torch.Tensor] | None = None,
        query: Episodes | None = None,
    ) -> tuple[PostAdaptation, list[TaskMLP], TaskMLP | None]:
        """The inner steps from θ = ``params`` (no graph), with the inner gradients in closed form.

        Computes what :meth:`post_adaptation` computes with ``create_graph=False``
        under ``torch.no_grad`` (the inner-loss gradient from
        :mod:`metarl.algorithms.maml.curvature` instead of autograd) and keeps the cached
        forward passes, which the closed-form curvature then reuses. (Where nothing
        is reused, e.g. the line search, :meth:`post_adaptation` is the cheaper of
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
                -support_advantages[j] * per_task_weights(episodes.mask),
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
            return PostAdaptation(steps, empty, empty, empty), support_mlps, None
        query_mlp = TaskMLP(self.policy, task_params, query.observations)
        mean = query_mlp.mean.view(*query.actions.shape)  # [T, E, H, A]
        log_probs = gaussian_log_prob(mean, query_mlp.log_std[:, None, None, :], query.actions)
        post = PostAdaptation(steps, mean, query_mlp.log_std, log_probs, query_params=task_params)
        return post, support_mlps, query_mlp

    def post_adaptation(
        self,
        params: Params,
        batch: MetaBatch,
        create_graph: bool,
        old_support_log_probs: list[torch.Tensor] | None = None,
        cut_at_adapted: bool = False,
    ) -> PostAdaptation:
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
        return PostAdaptation(steps, mean, log_std, log_probs, initial_params, task_params)

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
        batch = self.batch(support, query)
        metrics = self.outer_loop.update(batch)
        metrics["train/support_return"] = float(batch.support[0].returns.mean())
        metrics["train/query_return"] = float(batch.query.returns.mean())
        metrics["time/meta_update_s"] = time.perf_counter() - start
        return metrics

    # ---------------------------------------------------------------- resume

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Learner state beyond the policy weights, as a flat dict of tensors (safetensors-ready).

        The outer loop's: for ``promp`` the Adam moments and step counts, keyed
        ``"promp_adam/<param name>/<state key>"``; empty for ``trpo``.
        """
        return self.outer_loop.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned (tensors may be on any device).

        Raises:
            ValueError: if the keys do not belong to this learner's outer algorithm
                or parameters.
        """
        self.outer_loop.load_state_dict(state)
