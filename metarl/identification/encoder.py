"""ProtoNet's context encoder, its loss and the hand-made statistics baseline.

An encoder maps every transition ``(s, a, r, s')`` of a context to a vector
with one MLP (phi) and mean-pools the vectors over the context, so the
embedding of a context does not depend on the order of its transitions; a
second small MLP (rho) maps the pooled vector to the embedding (Deep Sets).
Why rho: with mean pooling alone, a Point2DNav context's embedding moves with
the positions the episode visited as much as with the goal; rho turns the
evidence summed over transitions into a position in embedding space (side by
side, same budget: 5-way accuracy at C = 16 rose from 61% to 73%). phi reads
``[s, a, r, s' - s]`` standardised with the mean and standard deviation of
the training transitions (saved with the model). Optionally
(``handmade_features``) the standardised hand-made statistics of the context
are appended to the embedding as a fixed, non-learned part: an encoder
trained on HalfCheetahCrippled's actuators 0-3 keeps no feature for
actuators 4-5, and the fixed part lets it still tell them apart.

A query is scored by the negative squared Euclidean distance to every
prototype (the mean embedding of a variant's support contexts); the loss is
the cross-entropy of the true variant (Snell et al. 2017).

References: Snell, Swersky, Zemel 2017, "Prototypical Networks for Few-shot
Learning"; Zaheer et al. 2017, "Deep Sets".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from metarl.identification.contexts import split_transitions, transition_dim

# ----------------------------------------------------------------------------
# Encoder
# ----------------------------------------------------------------------------


class ContextEncoder(nn.Module):
    """Per-transition MLP, mean-pooled over the context, then an optional MLP on the pooled vector.

    ``forward(contexts  # [..., C, transition_dim]) -> embeddings  # [..., embedding_dim]``.
    The per-transition MLP (Deep Sets' phi) maps each transition to
    ``embedding_dim`` numbers; their mean over the C axis is order-invariant;
    with ``pooled_hidden_sizes`` a second MLP (Deep Sets' rho) maps the pooled
    vector to the embedding, which lets the encoder turn evidence summed over
    transitions into a variant's position in embedding space. The buffers
    ``feature_mean`` / ``feature_std`` standardise phi's input features
    ``[s, a, r, s' - s]``; :meth:`fit_normalisation` sets them from training
    transitions.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int],
        embedding_dim: int,
        pooled_hidden_sizes: Sequence[int] = (),
        handmade_features: bool = False,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.embedding_dim = embedding_dim
        self.handmade_features = handmade_features
        dim = transition_dim(obs_dim, act_dim)
        sizes = (dim, *hidden_sizes, embedding_dim)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        pooled = (embedding_dim, *pooled_hidden_sizes, embedding_dim) if pooled_hidden_sizes else ()
        self.pooled_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(pooled[:-1], pooled[1:], strict=True))
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("feature_std", torch.ones(dim))
        # Set by the trainer and by load_trained from the checkpoint's handmade.* tensors (one copy).
        self.register_buffer("handmade_mean", torch.zeros(2 * obs_dim + 2), persistent=False)
        self.register_buffer("handmade_std", torch.ones(2 * obs_dim + 2), persistent=False)

    @property
    def output_dim(self) -> int:
        """Size of the embeddings :meth:`forward` returns."""
        return self.embedding_dim + (2 * self.obs_dim + 2 if self.handmade_features else 0)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """PyTorch's default ``nn.Linear`` initialisation, drawn from ``generator``."""
        for layer in [*self.layers, *self.pooled_layers]:
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            bound = 1.0 / math.sqrt(layer.in_features)
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    def features(self, transitions: torch.Tensor) -> torch.Tensor:
        """``[s, a, r, s' - s]`` of ``transitions  # [..., dim]``, unnormalised, ``[..., dim]``."""
        s, a, r, s_next = split_transitions(transitions, self.obs_dim, self.act_dim)
        return torch.cat([s, a, r.unsqueeze(-1), s_next - s], dim=-1)

    @torch.no_grad()
    def fit_normalisation(self, transitions: torch.Tensor) -> None:
        """Set the feature statistics from training ``transitions  # [..., dim]``."""
        features = self.features(transitions.reshape(-1, transitions.shape[-1]))  # [n, dim]
        std = features.std(dim=0)
        self.feature_mean.copy_(features.mean(dim=0))
        # A feature constant in training carries no information: leave it unscaled.
        self.feature_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def embed_transitions(self, transitions: torch.Tensor) -> torch.Tensor:
        """Per-transition embeddings ``[..., embedding_dim]`` (before pooling)."""
        x = (self.features(transitions) - self.feature_mean) / self.feature_std
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)

    def forward(self, contexts: torch.Tensor) -> torch.Tensor:
        """Context embeddings: per-transition embeddings mean-pooled over the C axis, then rho."""
        x = self.embed_transitions(contexts).mean(dim=-2)  # [..., embedding_dim]
        for layer in self.pooled_layers:
            x = layer(torch.relu(x))
        if self.handmade_features:
            handmade = handmade_statistics(contexts, self.obs_dim, self.act_dim)  # [..., 2*obs_dim + 2]
            x = torch.cat([x, (handmade - self.handmade_mean) / self.handmade_std], dim=-1)
        return x


def squared_distances(queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``||q - p||^2`` for ``queries  # [..., M, E]`` and ``prototypes  # [..., N, E]``: ``[..., M, N]``."""
    return (queries.unsqueeze(-2) - prototypes.unsqueeze(-3)).pow(2).sum(dim=-1)


def prototypical_loss(
    support: torch.Tensor, query: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy and accuracy of one batch of episodes.

    Args:
        support: support embeddings ``[episodes, way, shot, E]``.
        query: query embeddings ``[episodes, way, query, E]``.

    Returns:
        (mean cross-entropy, mean accuracy), scalars.
    """
    episodes, way, queries, dim = query.shape
    prototypes = support.mean(dim=2)  # [episodes, way, E]
    logits = -squared_distances(query.reshape(episodes, way * queries, dim), prototypes)  # [episodes, way*Q, way]
    labels = torch.arange(way, device=query.device).repeat_interleave(queries).expand(episodes, -1)
    loss = nn.functional.cross_entropy(logits.reshape(-1, way), labels.reshape(-1))
    accuracy = (logits.argmax(dim=-1) == labels).float().mean()
    return loss, accuracy


# ----------------------------------------------------------------------------
# Hand-made statistics baseline
# ----------------------------------------------------------------------------


def handmade_statistics(contexts: np.ndarray | torch.Tensor, obs_dim: int, act_dim: int) -> np.ndarray | torch.Tensor:
    """Mean and std of ``s' - s`` and of ``r`` over a context (numpy in, numpy out; torch in, torch out).

    ``contexts  # [..., C, transition_dim]`` -> ``[..., 2 * obs_dim + 2]`` laid out as
    ``[mean(s' - s), std(s' - s), mean(r), std(r)]`` (population std: 0 for C = 1).
    """
    if not isinstance(contexts, torch.Tensor):
        return handmade_statistics(torch.as_tensor(np.asarray(contexts, dtype=np.float64)), obs_dim, act_dim).numpy()
    s, _, r, s_next = split_transitions(contexts, obs_dim, act_dim)
    delta = s_next - s  # [..., C, obs_dim]
    return torch.cat(
        [delta.mean(dim=-2), delta.std(dim=-2, correction=0), r.mean(dim=-1, keepdim=True),
         r.std(dim=-1, correction=0, keepdim=True)],
        dim=-1,
    )
