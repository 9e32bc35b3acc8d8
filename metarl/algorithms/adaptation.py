"""Functional policy-gradient adaptation of every task of a meta-batch at once.

The inner loop of MAML: starting from the meta-parameters, each task takes
``k`` policy-gradient steps on its own support episodes. Parameters are plain
tensor dicts (``torch.func`` style) with a leading task dimension
``[tasks, ...]``; the policy module is never mutated. All tasks are adapted in
one batched computation: the policy is evaluated with each task's own
parameters (:func:`metarl.core.policy.batched_policy_forward`), the
per-task losses are summed, and one ``torch.autograd.grad`` call gives every
task's gradient at once (task ``i``'s loss depends only on its own slice of
the stacked parameters, so the gradient of the sum w.r.t. the stack is the
stack of per-task gradients).

Inner objectives (``objective``):

- ``"vpg"``: the MAML paper's surrogate, minus the advantage-weighted
  log-likelihood ``-mean_t[log π(a_t|s_t) A_t]``.
- ``"lvc"``: ProMP's low-variance curvature objective (DiCE-style),
  ``-mean_t[π(a_t|s_t) / π_old(a_t|s_t) A_t]``. ``π_old`` is
  ``stop_gradient(π)`` unless the log-probabilities of the sampling policy are
  passed as ``old_log_probs`` (as ProMP does, which importance-weights the
  inner gradient when the meta-parameters have moved since sampling). At the
  sampling parameters its gradient equals ``vpg``'s but its Hessian keeps the
  term ``∇log π ∇log π^T A`` that the plain surrogate drops, so the
  second-order meta-gradient accounts for how adaptation changes the data
  distribution.

With ``create_graph=True`` the adapted parameters are differentiable w.r.t.
the initial ones including the inner gradient (second-order MAML); with
``create_graph=False`` the inner gradient is a constant, so the Jacobian of
the step is the identity (first-order MAML). Advantages are computed from
the data alone (linear baseline, GAE, per-task normalisation) and do not
depend on the parameters; callers that adapt several times from the same
episodes pass them precomputed.

References: Finn, Abbeel, Levine 2017 (MAML); Rothfuss et al. 2019 (ProMP,
LVC); Foerster et al. 2018 (DiCE).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from metarl.core.baseline import LinearFeatureBaseline
from metarl.core.episodes import Episodes
from metarl.core.policy import (
    GaussianMLPPolicy,
    Params,
    batched_policy_forward,
    gaussian_log_prob,
    stack_params,
)
from metarl.core.returns import gae, normalize_advantages
from metarl.core.validation import check_choice, check_number

OBJECTIVES = ("vpg", "lvc")


def check_objective(objective: str) -> None:
    """Raise ``ValueError`` unless ``objective`` is one of :data:`OBJECTIVES`."""
    check_choice("inner objective", objective, OBJECTIVES)


LATER_STEP_LR_FACTOR = 0.5
"""Adaptation steps k >= 2 use this fraction of the first step's learning rate (the MAML paper's protocol)."""


def adaptation_lrs(inner_lr: float, steps: int) -> list[float]:
    """Learning rate of each of ``steps`` adaptation steps: ``inner_lr``, then :data:`LATER_STEP_LR_FACTOR` of it."""
    return [inner_lr if k == 0 else inner_lr * LATER_STEP_LR_FACTOR for k in range(steps)]


@dataclasses.dataclass(frozen=True)
class AdaptationSettings:
    """How a run that adapts by policy-gradient steps adapts to a new task (docs/design.md, "Evaluation protocol").

    One value per run, built from its ``config.json`` by :meth:`from_config` alone, and
    used alike by ``metarl evaluate``, ``metarl render``, ``metarl train random-init
    --like`` and :func:`metarl.api.load_run`. The learning rate of step ``k`` is
    :meth:`lrs` (``inner_lr``, then half of it).
    """

    inner_lr: float
    """Learning rate of the first adaptation step (later steps: :data:`LATER_STEP_LR_FACTOR` of it)."""
    inner_objective: str = "vpg"
    """Policy-gradient objective of the steps: vpg or lvc (:data:`OBJECTIVES`)."""
    discount: float = 0.99
    """Discount of the returns the advantages are computed from."""
    gae_lambda: float = 1.0
    """GAE lambda of the advantages."""
    normalize_advantages: bool = True
    """Centre and scale the advantages per task (as the run was trained)."""

    def __post_init__(self) -> None:
        check_number("inner_lr", self.inner_lr, 0, low_open=True)
        check_objective(self.inner_objective)
        check_number("discount", self.discount, 0, 1)
        check_number("gae_lambda", self.gae_lambda, 0, 1)
        if not isinstance(self.normalize_advantages, bool):
            raise ValueError(f"normalize_advantages must be true or false, got {self.normalize_advantages!r}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AdaptationSettings:
        """The settings of a run, from its ``config.json``: the one place they are read.

        Read from ``config["maml"]`` (MAML and pretrain runs) or ``config["adaptation"]``
        (random-init runs); a key an older run does not record takes the default it was
        adapted with then (those of :class:`metarl.algorithms.maml.learner.MAMLConfig`).

        Raises:
            ValueError: the config names no ``inner_lr`` under either key, or a value is invalid.
        """
        block = config.get("maml", config.get("adaptation"))
        if not isinstance(block, Mapping) or "inner_lr" not in block:
            raise ValueError(
                f"config.json of a {config.get('method')!r} run names no inner_lr under 'maml' or 'adaptation'"
            )
        return cls(
            inner_lr=float(block["inner_lr"]),
            inner_objective=str(block.get("inner_objective", "vpg")),
            discount=float(block.get("discount", 0.99)),
            gae_lambda=float(block.get("gae_lambda", 1.0)),
            normalize_advantages=bool(block.get("normalize_advantages", True)),
        )

    def lrs(self, steps: int) -> list[float]:
        """Learning rate of each of ``steps`` adaptation steps (:func:`adaptation_lrs`)."""
        return adaptation_lrs(self.inner_lr, steps)

    def keywords(self) -> dict[str, Any]:
        """The settings as keyword arguments (``inner_lr``, ``inner_objective``, ``discount``, ``gae_lambda``,
        ``normalize_advantages``), as :func:`metarl.evaluation.protocol.evaluate_gradient_adaptation` takes them."""
        return dataclasses.asdict(self)


def estimate_advantages(
    episodes: Episodes,
    discount: float,
    gae_lambda: float,
    normalize: bool = True,
    baseline: LinearFeatureBaseline | None = None,
) -> torch.Tensor:
    """Advantages of every step: linear baseline fitted per task, then GAE.

    Args:
        episodes: the meta-batch.
        discount: γ.
        gae_lambda: λ of GAE (1.0: Monte-Carlo returns minus baseline, as MAML).
        normalize: centre and scale per task (rllab's ``center_adv``).
        baseline: the baseline to fit (default: :class:`LinearFeatureBaseline`).

    Returns:
        ``[tasks, episodes, H]`` advantages (no gradient), 0 on padding.
    """
    baseline = baseline if baseline is not None else LinearFeatureBaseline()
    with torch.no_grad():
        values = baseline.fit_predict(episodes, discount)  # [T, E, H]
        advantages = gae(episodes.rewards, values, episodes.mask, discount, gae_lambda)  # [T, E, H]
        if normalize:
            advantages = normalize_advantages(advantages, episodes.mask)
    return advantages


def task_log_probs(
    policy: GaussianMLPPolicy, task_params: Params, episodes: Episodes
) -> torch.Tensor:
    """Log-likelihood of every action under its task's parameters  # [tasks, episodes, H]."""
    mean, log_std = batched_policy_forward(
        policy, task_params, episodes.observations
    )  # [T, E, H, A], [T, A]
    return gaussian_log_prob(mean, log_std[:, None, None, :], episodes.actions)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the taken steps of each task: ``[tasks, ...]`` -> ``[tasks]``."""
    dims = tuple(range(1, values.dim()))
    return (values * mask).sum(dim=dims) / mask.sum(dim=dims).clamp(min=1.0)


def policy_gradient_loss(
    log_probs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    objective: str,
    old_log_probs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Inner-loop loss of each task (to be minimised)  # [tasks].

    Args:
        log_probs: ``[tasks, episodes, H]`` log π(a|s) under the current parameters.
        advantages: ``[tasks, episodes, H]``.
        mask: ``[tasks, episodes, H]``.
        objective: ``"vpg"`` or ``"lvc"`` (see the module docstring).
        old_log_probs: ``[tasks, episodes, H]`` log-probabilities of the sampling
            policy for ``"lvc"``; default ``log_probs.detach()``.
    """
    check_objective(objective)
    if objective == "vpg":
        weighted = log_probs * advantages
    else:
        old = log_probs.detach() if old_log_probs is None else old_log_probs.detach()
        weighted = torch.exp(log_probs - old) * advantages
    return -masked_mean(weighted, mask)


def inner_loss(
    policy: GaussianMLPPolicy,
    task_params: Params,
    episodes: Episodes,
    advantages: torch.Tensor,
    objective: str = "vpg",
    old_log_probs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Inner-loop loss of each task under its parameters  # [tasks]."""
    log_probs = task_log_probs(policy, task_params, episodes)
    return policy_gradient_loss(log_probs, advantages, episodes.mask, objective, old_log_probs)


@dataclasses.dataclass(frozen=True)
class InnerStepResult:
    """An inner step's adapted parameters and the policy outputs it computed on the way."""

    params: Params
    """Adapted parameters ``[tasks, ...]``."""
    mean: torch.Tensor  # [tasks, episodes, H, act_dim]
    """Action means on the support observations, before the step."""
    log_std: torch.Tensor  # [tasks, act_dim]
    """Log-std before the step."""
    log_probs: torch.Tensor  # [tasks, episodes, H]
    """Log-likelihood of the support actions, before the step."""


def inner_step_with_outputs(
    policy: GaussianMLPPolicy,
    task_params: Params,
    episodes: Episodes,
    lr: float,
    objective: str = "vpg",
    discount: float = 0.99,
    gae_lambda: float = 1.0,
    create_graph: bool = False,
    *,
    advantages: torch.Tensor | None = None,
    old_log_probs: torch.Tensor | None = None,
    normalize_advantages: bool = True,
) -> InnerStepResult:
    """:func:`inner_step`, also returning the pre-step policy outputs on the support data.

    Algorithms that need the pre-adaptation distribution (ProMP's KL penalty,
    the sampling policy's log-probabilities) take it from here instead of
    evaluating the policy a second time. The outputs carry the autograd graph
    of ``task_params`` when those require grad.
    """
    check_objective(objective)
    check_number("inner lr", lr, 0, low_open=True)
    if advantages is None:
        advantages = estimate_advantages(episodes, discount, gae_lambda, normalize_advantages)
    names = list(task_params)
    outer_grad_enabled = torch.is_grad_enabled()  # under no_grad the result is detached
    with torch.enable_grad():
        differentiable = {
            name: outer_grad_enabled and value.requires_grad for name, value in task_params.items()
        }
        leaves = {
            name: value if differentiable[name] else value.detach().requires_grad_(True)
            for name, value in task_params.items()
        }
        mean, log_std = batched_policy_forward(
            policy, leaves, episodes.observations
        )  # [T, E, H, A], [T, A]
        log_probs = gaussian_log_prob(
            mean, log_std[:, None, None, :], episodes.actions
        )  # [T, E, H]
        loss = policy_gradient_loss(
            log_probs, advantages, episodes.mask, objective, old_log_probs
        ).sum()
        grads = torch.autograd.grad(
            loss, [leaves[name] for name in names], create_graph=create_graph
        )
    adapted = {}
    for name, grad in zip(names, grads, strict=True):
        if not differentiable[name]:
            adapted[name] = (task_params[name] - lr * grad).detach()
        else:
            adapted[name] = task_params[name] - lr * (grad if create_graph else grad.detach())
    if not any(differentiable.values()):
        mean, log_std, log_probs = mean.detach(), log_std.detach(), log_probs.detach()
    return InnerStepResult(adapted, mean, log_std, log_probs)


def inner_step(
    policy: GaussianMLPPolicy,
    task_params: Params,
    episodes: Episodes,
    lr: float,
    objective: str = "vpg",
    discount: float = 0.99,
    gae_lambda: float = 1.0,
    create_graph: bool = False,
    *,
    advantages: torch.Tensor | None = None,
    old_log_probs: torch.Tensor | None = None,
    normalize_advantages: bool = True,
) -> Params:
    """One policy-gradient step for every task at once: ``θ_i' = θ_i - lr ∇ L_i(θ_i)``.

    Args:
        policy: the module (only its structure is used; never mutated).
        task_params: per-task parameters ``[tasks, ...]`` (e.g. from
            :func:`metarl.core.policy.stack_params`).
        episodes: support episodes of the same tasks, collected with ``task_params``.
        lr: inner learning rate α (> 0).
        objective: ``"vpg"`` or ``"lvc"``.
        discount: γ for the advantages.
        gae_lambda: λ for the advantages.
        create_graph: keep the graph of the inner gradient, so that the result is
            differentiable w.r.t. ``task_params`` through the gradient (second-order
            MAML). Otherwise the gradient is a constant (first-order MAML); the
            result still depends on ``task_params`` with an identity Jacobian.
        advantages: precomputed ``[tasks, episodes, H]`` advantages (skips the
            baseline fit; ``discount``, ``gae_lambda`` and ``normalize_advantages``
            are then unused).
        old_log_probs: sampling-policy log-probabilities for ``"lvc"`` (see
            :func:`policy_gradient_loss`).
        normalize_advantages: normalise advantages per task when computing them.

    Returns:
        The adapted parameters ``[tasks, ...]``. Detached if ``task_params`` does
        not require grad or grad mode is off (``torch.no_grad()``).
    """
    return inner_step_with_outputs(
        policy,
        task_params,
        episodes,
        lr,
        objective,
        discount,
        gae_lambda,
        create_graph,
        advantages=advantages,
        old_log_probs=old_log_probs,
        normalize_advantages=normalize_advantages,
    ).params


def as_task_params(policy: GaussianMLPPolicy, params: Params, num_tasks: int) -> Params:
    """Per-task parameters ``[tasks, ...]`` from shared (module-shaped) or per-task ones."""
    shapes = {name: value.shape for name, value in policy.named_parameters()}
    if set(params) != set(shapes):
        raise ValueError(
            f"params must have the policy's parameter names {sorted(shapes)}, got {sorted(params)}"
        )
    if all(params[name].shape == shapes[name] for name in shapes):
        return stack_params(params, num_tasks)
    for name, shape in shapes.items():
        if tuple(params[name].shape) != (num_tasks, *shape):
            raise ValueError(
                f"params[{name!r}] has shape {tuple(params[name].shape)}; expected {tuple(shape)} (shared) "
                f"or {(num_tasks, *shape)} (per task)"
            )
    return params


def adapt(
    policy: GaussianMLPPolicy,
    params: Params,
    episodes_per_step: Sequence[Episodes],
    lrs: Sequence[float],
    objective: str = "vpg",
    discount: float = 0.99,
    gae_lambda: float = 1.0,
    create_graph: bool = False,
    *,
    advantages_per_step: Sequence[torch.Tensor] | None = None,
    old_log_probs_per_step: Sequence[torch.Tensor] | None = None,
    normalize_advantages: bool = True,
) -> Params:
    """``k = len(episodes_per_step)`` inner steps; step ``j`` uses ``episodes_per_step[j]`` and ``lrs[j]``.

    ``episodes_per_step[j]`` must have been collected with the parameters after
    ``j`` steps. ``params`` may be shared (the module's shapes; repeated for
    every task) or per task ``[tasks, ...]``. The other arguments are those of
    :func:`inner_step` (``advantages_per_step`` / ``old_log_probs_per_step``:
    one entry per step).

    Returns:
        The parameters after ``k`` steps ``[tasks, ...]``.
    """
    if len(episodes_per_step) == 0:
        raise ValueError("adapt needs at least one step of episodes (episodes_per_step is empty)")
    if len(lrs) != len(episodes_per_step):
        raise ValueError(
            f"lrs has {len(lrs)} entries but episodes_per_step has {len(episodes_per_step)}; give one lr per step"
        )
    for name, per_step in (
        ("advantages_per_step", advantages_per_step),
        ("old_log_probs_per_step", old_log_probs_per_step),
    ):
        if per_step is not None and len(per_step) != len(episodes_per_step):
            raise ValueError(
                f"{name} has {len(per_step)} entries, expected one per step ({len(episodes_per_step)})"
            )
    task_params = as_task_params(policy, params, episodes_per_step[0].num_tasks)
    for step, (episodes, lr) in enumerate(zip(episodes_per_step, lrs, strict=True)):
        task_params = inner_step(
            policy,
            task_params,
            episodes,
            lr,
            objective,
            discount,
            gae_lambda,
            create_graph,
            advantages=None if advantages_per_step is None else advantages_per_step[step],
            old_log_probs=None if old_log_probs_per_step is None else old_log_probs_per_step[step],
            normalize_advantages=normalize_advantages,
        )
    return task_params
