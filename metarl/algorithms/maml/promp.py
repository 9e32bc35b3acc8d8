"""MAML's ProMP outer loop: clipped likelihood ratio and an inner-step KL penalty, with Adam.

Maximise ``mean_t[min(r A, clip(r, 1-ε, 1+ε) A)]`` on the query episodes minus
``kl_coef * sum_j KL(π_θj,old || π_θj)`` (the KL of each inner step's pre-update
policy, on that step's support episodes) with ``steps`` Adam steps per meta-batch,
re-adapting at every step. With the ``lvc`` inner objective the inner step
importance-weights by the sampling policy, as in ProMP. The Adam moments are the
loop's state (:meth:`ProMPOuterLoop.state_dict`), saved in checkpoints.

References: Rothfuss, Lee, Clavera, Asfour, Abbeel 2019, "ProMP: Proximal Meta-Policy Search".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from metarl.algorithms.adaptation import masked_mean
from metarl.algorithms.maml.batch import (
    MetaBatch,
    PostAdaptation,
    detached,
    inner_loss_metric,
    query_terms,
)
from metarl.core.policy import gaussian_kl

if TYPE_CHECKING:
    from metarl.algorithms.maml.learner import MAMLLearner


class ProMPOuterLoop:
    """The ``promp`` outer loop of a :class:`~metarl.algorithms.maml.learner.MAMLLearner`.

    Args:
        learner: the learner whose policy this loop updates (already on its device);
            its ``config.promp`` holds the settings. Adam is built here, over the
            policy's parameters.
    """

    def __init__(self, learner: MAMLLearner) -> None:
        self.learner = learner
        self.settings = learner.config.promp
        self.optimizer = torch.optim.Adam(learner.policy.parameters(), lr=self.settings.lr)

    def objective(
        self, post: PostAdaptation, batch: MetaBatch, old: PostAdaptation
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ProMP's objective to maximise, with its clipped and inner-KL parts."""
        eps = self.settings.clip_eps
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
        return clip_objective - self.settings.kl_coef * inner_kl, clip_objective, inner_kl

    def update(self, batch: MetaBatch) -> dict[str, float]:
        """``steps`` Adam steps on ``batch`` (see the module docstring); changes θ in place."""
        learner = self.learner
        params = learner.policy.params()
        old: PostAdaptation | None = None
        history: list[tuple[float, float, float]] = []
        for _ in range(self.settings.steps):
            post = learner.post_adaptation(
                params,
                batch,
                create_graph=not learner.config.first_order,
                old_support_log_probs=None if old is None else [s.log_probs for s in old.steps],
            )
            if old is None:  # the first pass is at the sampling parameters
                old = detached(post)
            objective, clip_objective, inner_kl = self.objective(post, batch, old)
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
            final = learner.post_adaptation(params, batch, False, [s.log_probs for s in old.steps])
            objective, clip_objective, inner_kl = self.objective(final, batch, old)
            _, query_kl = query_terms(final, batch, old)
        self.optimizer.zero_grad(set_to_none=True)
        return {
            "loss/objective_before": history[0][0],
            "loss/objective_after": float(objective),
            "loss/clip_objective_after": float(clip_objective),
            "loss/inner_kl": float(inner_kl),
            "loss/kl": float(query_kl),
            "train/inner_loss": inner_loss_metric(old, batch),
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Learner state beyond the policy weights, as a flat dict of tensors (safetensors-ready).

        The Adam moments and step counts, keyed ``"promp_adam/<param name>/<state key>"``.
        """
        state: dict[str, torch.Tensor] = {}
        for name, param in self.learner.policy.named_parameters():
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
        names = [name for name, _ in self.learner.policy.named_parameters()]
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
                field: value.to(self.learner.device) if field != "step" else value.cpu()
                for field, value in per_param[name].items()
            }
            for index, name in enumerate(names)
            if name in per_param
        }
        self.optimizer.load_state_dict(optimizer_state)
