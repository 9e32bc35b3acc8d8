"""A trained ProtoNet run: :func:`load_trained` and the online :class:`TaskIdentifier`.

:class:`TaskIdentifier` is the online face of a trained run, for a robot's
control loop: embed the transitions seen so far, compare with prototypes.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

import metarl_envs as envs
from metarl.core.rollout import env_dims
from metarl.identification.config import ProtoNetConfig
from metarl.identification.contexts import transition_dim
from metarl.identification.encoder import ContextEncoder, squared_distances
from metarl.identification.trainer import TrainedProtoNet
from metarl.storage.checkpoint import CheckpointError, check_compatible, load_checkpoint
from metarl.storage.runs import RunDir


def load_trained(run_dir: str | os.PathLike[str]) -> TrainedProtoNet:
    """The trained encoder of a protonet run directory (its latest checkpoint)."""
    path = RunDir(run_dir).checkpoint_path
    tensors, metadata = load_checkpoint(path)
    if metadata.get("method") != "protonet":
        raise CheckpointError(f"{path} holds a {metadata.get('method')!r} checkpoint, not a protonet one")
    try:
        return _trained_from_checkpoint(tensors, metadata, path)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint {path} does not describe a ProtoNet encoder ({type(error).__name__}: "
                              f"{error})") from None


def _trained_from_checkpoint(tensors: dict[str, torch.Tensor], metadata: dict[str, Any], path: Any) -> TrainedProtoNet:
    config = ProtoNetConfig.from_dict(metadata["config"])
    obs_dim, act_dim = env_dims(config.family)
    check_compatible(metadata, config.family, obs_dim, act_dim, path)
    encoder = ContextEncoder(obs_dim, act_dim, config.hidden_sizes, config.embedding_dim, config.pooled_hidden_sizes,
                             config.handmade_features)
    encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in tensors.items() if k.startswith("encoder.")})
    encoder.handmade_mean.copy_(tensors["handmade.mean"])
    encoder.handmade_std.copy_(tensors["handmade.std"])
    return TrainedProtoNet(
        config, encoder.eval(), tensors["handmade.mean"].numpy(), tensors["handmade.std"].numpy(),
        tuple(envs.task_from_dict(t) for t in metadata["train_tasks"]), list(metadata.get("history", [])),
    )


# ----------------------------------------------------------------------------
# Online identification API
# ----------------------------------------------------------------------------


class TaskIdentifier:
    """Identify the variant a robot is facing from the transitions it has seen.

    ::

        identifier = TaskIdentifier.load(run_dir)
        prototypes = identifier.prototypes(support_contexts)    # [N, K, C, dim] -> [N, E]
        index, distances = identifier.identify(recent, prototypes)  # recent: [C, dim]

    Transitions use the layout of :mod:`metarl.identification.contexts`: ``[s, a, r, s']``,
    ``transition_dim = 2 * obs_dim + act_dim + 1``. Inputs may be numpy
    arrays or tensors; outputs are numpy arrays.
    """

    def __init__(self, encoder: ContextEncoder, family: str) -> None:
        self.encoder = encoder.eval()
        self.family = family
        self.obs_dim, self.act_dim = encoder.obs_dim, encoder.act_dim
        self.transition_dim = transition_dim(self.obs_dim, self.act_dim)

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> TaskIdentifier:
        """The identifier of a trained protonet run directory."""
        trained = load_trained(run_dir)
        return cls(trained.encoder, trained.config.family)

    def _contexts(self, transitions: Any, what: str, min_dims: int = 2) -> torch.Tensor:
        array = torch.as_tensor(np.asarray(transitions, dtype=np.float32))
        if array.ndim < min_dims:
            raise ValueError(
                f"{what} must have shape [..., C, {self.transition_dim}] (C transitions of layout "
                f"[s, a, r, s']), got shape {tuple(array.shape)}"
            )
        if array.shape[-1] != self.transition_dim:
            raise ValueError(
                f"{what}: each transition of {self.family} must have {self.transition_dim} numbers "
                f"([s ({self.obs_dim}), a ({self.act_dim}), r (1), s' ({self.obs_dim})]), got "
                f"{array.shape[-1]}"
            )
        if array.shape[-2] == 0:
            raise ValueError(f"{what}: a context needs at least one transition, got an empty context")
        if not torch.all(torch.isfinite(array)):
            raise ValueError(f"{what} must be finite (no NaN or inf)")
        return array

    def embed(self, transitions: Any) -> np.ndarray:
        """Embedding of a context ``[C, dim] -> [E]``, or of a batch ``[..., C, dim] -> [..., E]``."""
        contexts = self._contexts(transitions, "transitions")
        with torch.no_grad():
            return self.encoder(contexts).numpy()

    def prototypes(self, support_contexts: Any) -> np.ndarray:
        """One prototype per variant: ``[N, K, C, dim] -> [N, E]`` (mean of the K embeddings)."""
        support = self._contexts(support_contexts, "support_contexts", min_dims=4)
        if support.ndim != 4 or support.shape[0] == 0 or support.shape[1] == 0:
            raise ValueError(
                f"support_contexts must have shape [N variants, K contexts, C, {self.transition_dim}] with "
                f"N, K >= 1, got {tuple(support.shape)}"
            )
        with torch.no_grad():
            return self.encoder(support).mean(dim=1).numpy()

    def identify(self, transitions: Any, prototypes: Any) -> tuple[Any, np.ndarray]:
        """The nearest prototype to a context.

        Args:
            transitions: one context ``[C, dim]`` or a batch ``[B, C, dim]``.
            prototypes: ``[N, E]`` from :meth:`prototypes`.

        Returns:
            ``(index, distances)``: an int and ``[N]`` squared distances for one
            context; ``[B]`` indices and ``[B, N]`` distances for a batch.
        """
        protos = torch.as_tensor(np.asarray(prototypes, dtype=np.float32))
        dim = self.encoder.output_dim
        if protos.ndim != 2 or protos.shape[0] == 0 or protos.shape[1] != dim:
            raise ValueError(f"prototypes must have shape [N >= 1, {dim}], got {tuple(protos.shape)}")
        embedding = torch.from_numpy(self.embed(transitions))  # [E] or [B, E]
        distances = squared_distances(embedding.reshape(-1, dim), protos).numpy()  # [B, N]
        if embedding.ndim == 1:
            return int(distances[0].argmin()), distances[0]
        return distances.argmin(axis=1), distances

