"""SAC in the fine-tune baseline (Haarnoja et al. 2018): its :class:`~.adapter.SB3Adapter`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from stable_baselines3 import SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from torch import nn

from metarl.algorithms.finetune.adapter import SB3Adapter

if TYPE_CHECKING:
    from metarl.algorithms.finetune.config import FinetuneRecipe

LOG_ENT_COEF = "log_ent_coef"
"""Name of SAC's entropy coefficient (its log) among a model's saved tensors."""


class SACAdapter(SB3Adapter):
    """SAC: ReLU MLP actor with mean and log-std heads, twin Q critics; ``train_freq`` steps per round."""

    name = "sac"
    sb3_class = SAC
    activation = "relu"
    log_std_init = -3.0
    critic_key = "qf"
    heads = 2  # the actor's mean and log-std heads
    resumable = False  # the replay buffer is not checkpointed

    def default_hyperparameters(self) -> dict[str, Any]:
        """SB3's defaults with a smaller replay buffer."""
        return {"learning_rate": 3e-4, "buffer_size": 300_000, "learning_starts": 1000, "batch_size": 256,
                "tau": 0.005, "gamma": 0.99, "train_freq": 1, "gradient_steps": 1}

    def steps_per_round(self, hyperparameters: dict[str, Any], num_envs: int) -> int:
        """``train_freq`` steps (an int: steps, not episodes) of every env."""
        return int(hyperparameters["train_freq"]) * num_envs

    def rounds_per_iteration(self, horizon: int) -> int:
        """A round is a few env steps: an iteration is ``horizon`` rounds (about an episode per env)."""
        return horizon

    def policy_layers(self, model: BaseAlgorithm) -> list[list[nn.Module]]:
        """The hidden Linear layers of ``actor.latent_pi``, then ``[mu, log_std]`` (both heads)."""
        body = [m for m in model.actor.latent_pi if isinstance(m, nn.Linear)]
        return [[m] for m in body] + [[model.actor.mu, model.actor.log_std]]

    def new_head(self, model: BaseAlgorithm) -> None:
        for name in ("mu", "log_std"):
            old = getattr(model.actor, name)
            setattr(model.actor, name, nn.Linear(old.in_features, old.out_features).to(old.weight.device))

    def rebuild_optimizers(self, model: BaseAlgorithm, learning_rate: float) -> None:
        policy, actor, critic = model.policy, model.actor, model.critic
        actor.optimizer = policy.optimizer_class(
            [p for p in actor.parameters() if p.requires_grad], lr=learning_rate, **policy.optimizer_kwargs
        )
        critic.optimizer = policy.optimizer_class(
            [p for p in critic.parameters() if p.requires_grad], lr=learning_rate, **policy.optimizer_kwargs
        )
        if model.ent_coef_optimizer is not None:
            model.ent_coef_optimizer = torch.optim.Adam([model.log_ent_coef], lr=learning_rate)

    def finetune_overrides(self, recipe: FinetuneRecipe, horizon: int, chunk: int) -> dict[str, Any]:
        """A fresh replay buffer for the task; warm-started, so no random warm-up."""
        return {"learning_starts": 0, "buffer_size": chunk * recipe.num_steps,
                "learning_rate": recipe.learning_rate, "train_freq": 1, "gradient_steps": -1}

    def acting_parameter_count(self, model: BaseAlgorithm) -> int:
        """The actor: body, mean and log-std heads."""
        return sum(p.numel() for p in model.actor.parameters())

    def optimizers(self, model: BaseAlgorithm) -> dict[str, torch.optim.Optimizer]:
        found = {"actor": model.actor.optimizer, "critic": model.critic.optimizer}
        if model.ent_coef_optimizer is not None:
            found["ent_coef"] = model.ent_coef_optimizer
        return found

    def extra_state(self, model: BaseAlgorithm) -> dict[str, torch.Tensor]:
        """The learnt entropy coefficient."""
        if model.log_ent_coef is None:
            return {}
        return {LOG_ENT_COEF: model.log_ent_coef.detach().cpu().clone()}

    def load_extra_state(self, model: BaseAlgorithm, state: dict[str, torch.Tensor]) -> None:
        if LOG_ENT_COEF in state and model.log_ent_coef is not None:
            with torch.no_grad():
                model.log_ent_coef.copy_(state[LOG_ENT_COEF].to(model.log_ent_coef.device))


ADAPTER = SACAdapter()
