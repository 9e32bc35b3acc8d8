"""What differs between the stable-baselines3 algorithms, behind one interface.

Every place of the fine-tune baseline that would otherwise branch on the
algorithm (hyperparameters, collection rounds, network layers, the fresh head,
optimizers, the budget of a fine-tuning chunk, saved extras) asks the
algorithm's :class:`SB3Adapter` instead; :mod:`.ppo` and :mod:`.sac` hold the
two implementations and :func:`adapter` / :func:`adapter_of` find them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from torch import nn

if TYPE_CHECKING:
    from metarl.algorithms.finetune.config import FinetuneRecipe


class SB3Adapter(ABC):
    """One stable-baselines3 algorithm as the fine-tune baseline uses it."""

    name: ClassVar[str]
    """The ``--algo`` value."""
    sb3_class: ClassVar[type[BaseAlgorithm]]
    """The stable-baselines3 algorithm class."""
    activation: ClassVar[str]
    """Hidden-layer activation (a key of ``config.ACTIVATIONS``)."""
    log_std_init: ClassVar[float]
    """Initial log standard deviation of the policy."""
    critic_key: ClassVar[str]
    """The critic's key in SB3's ``net_arch`` (``vf`` or ``qf``)."""
    heads: ClassVar[int]
    """Linear output heads of the acting network (for the FLOP count)."""
    resumable: ClassVar[bool]
    """Whether an interrupted pretraining can continue bit-exactly (``--resume``)."""

    @abstractmethod
    def default_hyperparameters(self) -> dict[str, Any]:
        """SB3 keyword arguments used for pretraining."""

    @abstractmethod
    def steps_per_round(self, hyperparameters: dict[str, Any], num_envs: int) -> int:
        """Environment steps of one collection round of ``learn``."""

    @abstractmethod
    def rounds_per_iteration(self, horizon: int) -> int:
        """Collection rounds that make one iteration of the training loop (one checkpoint)."""

    @abstractmethod
    def policy_layers(self, model: BaseAlgorithm) -> list[list[nn.Module]]:
        """The policy network's layers from the observation up; each entry lists its Linear modules."""

    @abstractmethod
    def new_head(self, model: BaseAlgorithm) -> None:
        """Replace the action head by a freshly initialised one (draws from the global torch generator)."""

    @abstractmethod
    def rebuild_optimizers(self, model: BaseAlgorithm, learning_rate: float) -> None:
        """Fresh Adam optimizers over the trainable parameters only, at ``learning_rate``."""

    @abstractmethod
    def finetune_overrides(self, recipe: FinetuneRecipe, horizon: int, chunk: int) -> dict[str, Any]:
        """Hyperparameters for fine-tuning on one task with budget chunks of ``chunk`` steps."""

    @abstractmethod
    def acting_parameter_count(self, model: BaseAlgorithm) -> int:
        """Parameters of the network that acts (not the critic)."""

    @abstractmethod
    def optimizers(self, model: BaseAlgorithm) -> dict[str, torch.optim.Optimizer]:
        """The model's optimizers by name (their state is part of a training checkpoint)."""

    @abstractmethod
    def extra_state(self, model: BaseAlgorithm) -> dict[str, torch.Tensor]:
        """Tensors beside the policy's state dict that a pretrained model needs."""

    @abstractmethod
    def load_extra_state(self, model: BaseAlgorithm, state: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`extra_state` saved."""

    def policy_kwargs(self, hidden: list[int], activation: type[nn.Module], log_std_init: float) -> dict[str, Any]:
        """SB3's ``policy_kwargs``: actor and critic of ``hidden`` widths."""
        return {"net_arch": {"pi": hidden, self.critic_key: hidden}, "activation_fn": activation,
                "log_std_init": log_std_init}
