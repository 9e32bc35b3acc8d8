"""How much task information one inner step carries: agreement of inner gradients within and across tasks.

A gradient step adapts to a task only if its direction depends on the task more than on the noise of the
episodes it was computed from. :func:`inner_gradient_agreement` samples two independent batches of
episodes on every evaluation task from the same starting parameters, computes the inner step of each batch
(the displacement ``θ' − θ`` of :func:`metarl.algorithms.adaptation.inner_step`, a scaled policy gradient)
and compares their directions by cosine similarity:

- ``same_task``: the two batches of one task (mean over tasks). High when the step is not dominated by
  sampling noise.
- ``across_tasks``: a batch of one task against a batch of another, different task (pairs of equal tasks,
  which a family with a few discrete variants draws often, are left out). A step shared by every task
  (improve the policy in general) makes this as high as ``same_task``.
- ``task_specific``: the same-task cosine of what remains after removing the mean step over tasks (from
  each batch's own mean). This is the signal that adapts to *this* task: near 0, the task-specific part
  of the step is noise, and more episodes per step (or a step that averages the noise) would be needed.
  Where tasks repeat (a disabled actuator out of a few), this is the signal specific to the variant.

``scripts/inner_step_probe.py --agreement`` prints these for a run; docs/results/unseen-dynamics.md uses
them to explain where MAML's step adapts and where it does not.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from metarl.algorithms.adaptation import check_objective, inner_step
from metarl.core.device import resolve_device
from metarl.core.policy import GaussianMLPPolicy, Params, stack_params
from metarl.core.sampler import VectorEnvSampler
from metarl.core.validation import check_int
from metarl.evaluation.protocol import EvalOptions, options_tasks


@dataclasses.dataclass(frozen=True)
class GradientAgreement:
    """Cosines between inner steps (see the module docstring); per-task arrays have one entry per task."""

    episodes: int
    """Episodes per batch (per task)."""
    same_task: np.ndarray
    """``[tasks]``: cosine between the steps of a task's two batches."""
    across_tasks: float
    """Mean cosine between a batch of one task and a batch of another, different task."""
    task_specific: np.ndarray
    """``[tasks]``: cosine between the two batches' steps after removing each batch's mean step over tasks."""

    def summary(self) -> dict[str, float]:
        """Means over tasks, with the standard error of the per-task cosines."""
        def se(values: np.ndarray) -> float:
            return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")

        return {
            "episodes": self.episodes,
            "same_task": float(self.same_task.mean()), "same_task_se": se(self.same_task),
            "across_tasks": self.across_tasks,
            "task_specific": float(self.task_specific.mean()), "task_specific_se": se(self.task_specific),
        }


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[n, m]`` cosine similarities between the rows of ``a`` [n, P] and ``b`` [m, P]."""
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return a @ b.T


def inner_gradient_agreement(
    policy: GaussianMLPPolicy,
    params: Params,
    family: str,
    options: EvalOptions,
    *,
    inner_objective: str = "vpg",
    discount: float = 0.99,
    gae_lambda: float = 1.0,
    horizon: int | None = None,
    normalize_advantages: bool = True,
) -> GradientAgreement:
    """Two batches of ``options.episodes_per_step`` episodes per task from ``params``; their inner steps' cosines.

    The tasks are the evaluation tasks of ``options`` (split, number, seed), as in
    :func:`metarl.evaluation.protocol.evaluate_gradient_adaptation`; ``options.steps`` is unused.

    Raises:
        ValueError: fewer than 2 tasks (``across_tasks`` and ``task_specific`` need two).
    """
    check_objective(inner_objective)
    check_int("num_tasks", options.num_tasks, low=2)
    device = resolve_device(options.device)
    tasks = options_tasks(family, options)
    described = [repr(sorted(task.to_dict().items())) for task in tasks]
    different = torch.tensor([[a != b for b in described] for a in described], dtype=torch.bool)
    if not different.any():
        raise ValueError(f"the {len(tasks)} tasks are all the same task: nothing to compare across tasks")
    sampler = VectorEnvSampler(family, len(tasks), device, horizon=horizon)
    generator = torch.Generator().manual_seed(options.seed)
    policy = policy.to(device)
    start = stack_params({name: value.detach().to(device) for name, value in params.items()}, len(tasks))
    steps = []
    try:
        for _ in range(2):
            episodes = sampler.sample(policy, start, tasks, options.episodes_per_step, generator)
            adapted = inner_step(policy, start, episodes, 1.0, inner_objective, discount, gae_lambda,
                                 normalize_advantages=normalize_advantages)
            steps.append(torch.cat([(adapted[name] - start[name]).reshape(len(tasks), -1) for name in start],
                                   dim=1).double().cpu())
    finally:
        sampler.close()
    return agreement_of_steps(*steps, different, options.episodes_per_step)


def agreement_of_steps(first: torch.Tensor, second: torch.Tensor, different: torch.Tensor,
                       episodes: int) -> GradientAgreement:
    """The cosines of two batches' flattened steps ``[tasks, P]`` each; ``different[i, j]``: tasks i and j
    differ (only those pairs count across tasks)."""
    cosines = _cosines(first, second)
    specific = _cosines(first - first.mean(0), second - second.mean(0)).diagonal()
    return GradientAgreement(
        episodes=episodes,
        same_task=cosines.diagonal().numpy(),
        across_tasks=float(cosines[different].mean()),
        task_specific=specific.numpy(),
    )
