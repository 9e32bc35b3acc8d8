"""What MAML's learner and its outer loops share: a meta-batch, an adaptation chain, the query terms.

:class:`MetaBatch` is one meta-batch on the learner's device with its advantages;
:class:`PostAdaptation` is the adaptation chain from some θ and the adapted
policy's outputs on the query episodes. :func:`query_terms` (likelihood-ratio
surrogate and KL on the query episodes) and :func:`inner_loss_metric` are used
by both outer loops (:mod:`metarl.algorithms.maml.trpo`, :mod:`metarl.algorithms.maml.promp`).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import torch

from metarl.algorithms.adaptation import InnerStepResult, masked_mean
from metarl.core.episodes import Episodes
from metarl.core.policy import Params, gaussian_kl


@dataclasses.dataclass
class MetaBatch:
    """One meta-batch on the learner's device, with its data-only statistics."""

    support: list[Episodes]
    query: Episodes
    support_advantages: list[torch.Tensor]  # each [T, E, H]
    query_advantages: torch.Tensor  # [T, E, H]

    def first_tasks(self, n: int) -> MetaBatch:
        """The same batch restricted to its first ``n`` tasks."""
        return MetaBatch(
            [episodes.task_slice(slice(0, n)) for episodes in self.support],
            self.query.task_slice(slice(0, n)),
            [advantages[:n] for advantages in self.support_advantages],
            self.query_advantages[:n],
        )


@dataclasses.dataclass
class PostAdaptation:
    """The adaptation chain from some θ and the adapted policy on the query episodes."""

    steps: list[InnerStepResult]
    query_mean: torch.Tensor  # [T, E, H, A]
    query_log_std: torch.Tensor  # [T, A]
    query_log_probs: torch.Tensor  # [T, E, H]
    initial_params: Params | None = None
    """Per-task θ ``[T, ...]`` the chain started from (a view of the shared θ)."""
    query_params: Params | None = None
    """Parameters the query outputs were computed with: the adapted ones, or a detached
    leaf copy of them when the graph was cut there (see ``MAMLLearner.post_adaptation``)."""

    def first_tasks(self, n: int) -> PostAdaptation:
        """The same quantities for the first ``n`` tasks."""
        return PostAdaptation(
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


def detached(post: PostAdaptation) -> PostAdaptation:
    """A copy without autograd history (the "old" policy of a meta-update)."""
    return PostAdaptation(
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


def inner_loss_metric(old: PostAdaptation, batch: MetaBatch) -> float:
    """Mean pre-adaptation advantage-weighted log-likelihood loss (first inner step)."""
    log_probs = old.steps[0].log_probs
    return float(
        -masked_mean(log_probs * batch.support_advantages[0], batch.support[0].mask).mean()
    )


def per_task_weights(mask: torch.Tensor) -> torch.Tensor:
    """``mask / count`` per task: the weights of :func:`metarl.algorithms.adaptation.masked_mean`  # [T, ...]."""
    dims = tuple(range(1, mask.dim()))
    return mask / mask.sum(dim=dims, keepdim=True).clamp(min=1.0)


def query_terms(
    post: PostAdaptation, batch: MetaBatch, old: PostAdaptation
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


class OuterLoop(Protocol):
    """One outer-loop algorithm of MAML (:data:`metarl.algorithms.maml.learner.OUTER_LOOPS`).

    Built from the learner once; :meth:`update` changes the learner's policy in place.
    """

    def update(self, batch: MetaBatch) -> dict[str, float]:
        """One outer step on ``batch``; returns its ``loss/``, ``train/`` and ``time/`` metrics."""
        ...

    def state_dict(self) -> dict[str, torch.Tensor]:
        """State beyond the policy weights, as a flat dict of tensors (empty if none)."""
        ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned; ``ValueError`` for keys of another outer loop."""
        ...
