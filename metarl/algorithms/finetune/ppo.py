"""PPO in the fine-tune baseline (Schulman et al. 2017): its :class:`~.adapter.SB3Adapter`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from torch import nn

from metarl.algorithms.finetune.adapter import SB3Adapter

if TYPE_CHECKING:
    from metarl.algorithms.finetune.config import FinetuneRecipe


class PPOAdapter(SB3Adapter):
    """PPO: tanh MLP policy with a state-independent log-std; one rollout per round."""

    name = "ppo"
    sb3_class = PPO
    activation = "tanh"
    log_std_init = 0.0
    critic_key = "vf"
    heads = 1
    resumable = True

    def default_hyperparameters(self) -> dict[str, Any]:
        return {"learning_rate": 3e-4, "n_steps": 256, "batch_size": 64, "n_epochs": 10, "gamma": 0.99,
                "gae_lambda": 0.95, "clip_range": 0.2, "ent_coef": 0.0, "vf_coef": 0.5, "max_grad_norm": 0.5}

    def steps_per_round(self, hyperparameters: dict[str, Any], num_envs: int) -> int:
        """A rollout: ``n_steps`` steps in each of the ``num_envs`` envs."""
        return int(hyperparameters["n_steps"]) * num_envs

    def rounds_per_iteration(self, horizon: int) -> int:
        """One rollout and its update."""
        return 1

    def policy_layers(self, model: BaseAlgorithm) -> list[list[nn.Module]]:
        """The hidden Linear layers of ``mlp_extractor.policy_net``, then ``[action_net]``."""
        body = [m for m in model.policy.mlp_extractor.policy_net if isinstance(m, nn.Linear)]
        return [[m] for m in body] + [[model.policy.action_net]]

    def new_head(self, model: BaseAlgorithm) -> None:
        old = model.policy.action_net
        head = nn.Linear(old.in_features, old.out_features).to(old.weight.device)
        nn.init.orthogonal_(head.weight, gain=0.01)  # SB3's initialisation of the action head
        nn.init.zeros_(head.bias)
        model.policy.action_net = head

    def rebuild_optimizers(self, model: BaseAlgorithm, learning_rate: float) -> None:
        policy = model.policy
        trainable = [p for p in policy.parameters() if p.requires_grad]
        policy.optimizer = policy.optimizer_class(trainable, lr=learning_rate, **policy.optimizer_kwargs)

    def finetune_overrides(self, recipe: FinetuneRecipe, horizon: int, chunk: int) -> dict[str, Any]:
        """One rollout of ``horizon`` steps in each of the chunk's envs, ``ppo_epochs`` passes."""
        return {"n_steps": horizon, "n_epochs": recipe.ppo_epochs,
                "batch_size": max(1, chunk // recipe.ppo_minibatches), "learning_rate": recipe.learning_rate}

    def acting_parameter_count(self, model: BaseAlgorithm) -> int:
        """Body, action head and the state-independent log-std."""
        modules = [model.policy.mlp_extractor.policy_net, model.policy.action_net]
        return sum(p.numel() for m in modules for p in m.parameters()) + model.policy.log_std.numel()

    def optimizers(self, model: BaseAlgorithm) -> dict[str, torch.optim.Optimizer]:
        return {"policy": model.policy.optimizer}

    def extra_state(self, model: BaseAlgorithm) -> dict[str, torch.Tensor]:
        """None: the log-std is in the policy's state dict."""
        return {}

    def load_extra_state(self, model: BaseAlgorithm, state: dict[str, torch.Tensor]) -> None:
        """Nothing to load beside the policy's state dict."""


ADAPTER = PPOAdapter()
