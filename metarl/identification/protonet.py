"""ProtoNet task embedding: identify the environment variant from a few transitions.

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

Episodic training (Snell et al. 2017) on the train split: each episode draws
``way`` variants, ``shot`` support and ``query`` query contexts of each; the
prototype of a variant is the mean embedding of its support contexts; a query
is scored by the negative squared Euclidean distance to every prototype and
the loss is the cross-entropy of the true variant.

*Variants* (metarl.identification.contexts): for continuous families every sampled task is a
variant, and training draws ``way`` distinct tasks from a pool of
``train_variants`` train tasks (collected once, uniform random behaviour by
default); for discrete families (HalfCheetahCrippled) the variants are the
distinct tasks the split can produce, and a ``way`` larger than their number
is an error.

Evaluation (:func:`evaluate_identification`) runs 600 random few-shot episodes
on variants never seen in training (test and ood splits, fixed evaluation
seed) for context sizes C in {1, 4, 16, 64}; every context comes from its own
episode, and a context of size C is the first C transitions of a random
64-transition context. Beside the learned embedding it scores (a) the same
prototype classifier on hand-made statistics of a context (mean and std of
``s' - s`` and of ``r``, standardised with training statistics) and (b) chance
(1 / way). For a discrete family's ood split the candidates of each episode
are the novel variants plus training variants (up to ``way``), so a novel
variant must be told apart from the other novel ones *and* from the training
ones. Mean accuracy with the 95% normal-approximation interval over episodes
(mean ± 1.96 std / sqrt(episodes)), the convention of the few-shot literature.

:class:`TaskIdentifier` is the online face of a trained run, for a robot's
control loop: embed the transitions seen so far, compare with prototypes.

References: Snell, Swersky, Zemel 2017, "Prototypical Networks for Few-shot
Learning"; Zaheer et al. 2017, "Deep Sets"; context encoders for task
identification in meta-RL as in Rakelly et al. 2019 (PEARL) and Nagabandi et
al. 2019 (crippled-leg HalfCheetah / Ant variants).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import metarl_envs as envs
from metarl.core.device import resolve_device
from metarl.core.interrupts import deferred_interrupts, sigterm_as_interrupt
from metarl.core.policy import ActionMap
from metarl.core.sampler import env_dims
from metarl.core.validation import check_memory, check_number
from metarl.evaluation.document import IdentificationDocument, IdentificationProtocol, Interval
from metarl.evaluation.protocol import EVAL_SEED, EvalOptions, write_eval_json
from metarl.identification.contexts import (
    Behaviour,
    GaussianPolicyBehaviour,
    check_context_size,
    collect_contexts,
    collect_transitions,
    distinct_variants,
    sample_contexts,
    split_transitions,
    transition_dim,
)
from metarl.storage.checkpoint import (
    CheckpointError,
    check_compatible,
    flatten_state,
    load_checkpoint,
    read_int,
    restore_numpy_generator,
    save_checkpoint,
    unflatten_state,
)
from metarl.storage.runs import (
    ENV_BYTES,
    MetricsLogger,
    RunDir,
    check_resume,
    load_policy,
    writing_run,
)
from metarl_envs.tasks import Task

#: Context sizes of the evaluation table.
EVAL_CONTEXT_SIZES: tuple[int, ...] = (1, 4, 16, 64)


# ----------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProtoNetConfig:
    """Hyperparameters of ProtoNet training (everything needed to rebuild a run)."""

    family: str = "Point2DNav"
    """Task family (see ``metarl envs``)."""
    way: int = 5
    """N: variants per training episode."""
    shot: int = 5
    """K: support contexts per variant (their mean embedding is the prototype)."""
    query: int = 5
    """Q: query contexts per variant in a training episode."""
    context_size: int = 16
    """C: transitions per context during training."""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """Widths of the per-transition MLP's ReLU hidden layers."""
    embedding_dim: int = 64
    """Size of the per-transition vectors, of their mean and of the embedding."""
    pooled_hidden_sizes: tuple[int, ...] = (128,)
    """Widths of the ReLU hidden layers of the MLP applied after mean pooling (empty: the
    mean-pooled vector is the embedding)."""
    handmade_features: bool = False
    """Append the standardised hand-made statistics of the context (mean and std of s' - s and of r)
    to the learned embedding: a fixed part that keeps generic dynamics information for variants
    unlike every training one (an actuator never crippled in training), which the learned part,
    trained on the training variants only, may discard."""
    learning_rate: float = 2e-3
    """Adam step size at the start; it decays to 0 along a cosine over ``iterations``."""
    iterations: int = 2000
    """Adam steps."""
    episodes_per_iteration: int = 4
    """Training episodes averaged in one Adam step."""
    train_variants: int = 200
    """Train tasks in the training pool (continuous families; discrete families spread the same
    number of sub-env trajectories over their distinct train tasks)."""
    envs_per_variant: int = 12
    """Episodes (sub-env trajectories) collected per training variant; each context of a training
    episode comes from a different one, so it must be >= shot + query."""
    transitions_per_env: int | None = None
    """Real transitions kept per training sub-env: the length of the episodes contexts are drawn
    from (default: the family's horizon, as in evaluation)."""
    seed: int = 0
    """Seed of everything random in training (tasks, collection, initialisation, episodes)."""

    def __post_init__(self) -> None:
        if self.family not in envs.FAMILIES:
            raise ValueError(f"family must be one of {', '.join(envs.FAMILIES)}, got {self.family!r}")
        for name in ("way", "shot", "query", "context_size", "embedding_dim", "iterations",
                     "episodes_per_iteration", "train_variants", "envs_per_variant"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.way < 2:
            raise ValueError(f"way must be >= 2 (identification chooses among variants), got {self.way}")
        if self.envs_per_variant < self.shot + self.query:
            raise ValueError(
                f"envs_per_variant ({self.envs_per_variant}) must be >= shot + query ({self.shot + self.query}): "
                "every context of a variant comes from its own episode"
            )
        if self.transitions_per_env is not None and (
            isinstance(self.transitions_per_env, bool) or not isinstance(self.transitions_per_env, int)
            or self.transitions_per_env < 1
        ):
            raise ValueError(f"transitions_per_env must be a positive int or None, got {self.transitions_per_env!r}")
        if self.context_size > self.episode_length:
            raise ValueError(
                f"context_size ({self.context_size}) must be <= transitions_per_env "
                f"({self.episode_length}): a context is drawn from one sub-env's transitions"
            )
        if not self.hidden_sizes or any(isinstance(h, bool) or not isinstance(h, int) or h < 1
                                        for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be a non-empty tuple of positive ints, got {self.hidden_sizes!r}")
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.pooled_hidden_sizes):
            raise ValueError(f"pooled_hidden_sizes must be a tuple of positive ints, got {self.pooled_hidden_sizes!r}")
        check_number("learning_rate", self.learning_rate, 0, low_open=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")

    @property
    def episode_length(self) -> int:
        """Transitions per training sub-env: ``transitions_per_env`` or the family's horizon."""
        return self.transitions_per_env or envs.family_spec(self.family).horizon

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProtoNetConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown ProtoNetConfig fields {unknown}; known: {sorted(names)}")
        values = dict(data)
        for name in ("hidden_sizes", "pooled_hidden_sizes"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


def preset(name: str, family: str = "Point2DNav") -> ProtoNetConfig:
    """Named configurations: ``tiny`` (tests, seconds) and ``default`` (the README runs)."""
    if name == "tiny":
        return ProtoNetConfig(family=family, hidden_sizes=(64, 64), embedding_dim=32, pooled_hidden_sizes=(64,),
                              iterations=500, episodes_per_iteration=2, train_variants=60, envs_per_variant=10,
                              context_size=16, learning_rate=1e-2)
    if name == "default":
        return ProtoNetConfig(family=family)
    raise ValueError(f"unknown preset {name!r}; available presets: tiny, default")


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


# ----------------------------------------------------------------------------
# Variants of a split
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VariantPool:
    """The variants an evaluation or training draws from.

    ``tasks`` are the variants; ``required`` the indices every episode must
    contain (the novel variants of a discrete family's ood split).
    """

    tasks: tuple[Task, ...]
    discrete: bool
    required: tuple[int, ...] = ()


def variant_pool(family: str, split: str, count: int, rng: np.random.Generator) -> VariantPool:
    """The variants of ``split``: its distinct tasks (discrete) or ``count`` sampled tasks.

    For a discrete family's ood split the pool is the novel ood variants
    followed by the training variants, with the novel ones required.
    """
    distinct = distinct_variants(family, split)
    if distinct is None:
        return VariantPool(tuple(envs.distribution(family).sample(count, split, rng)), discrete=False)
    if split != "ood":
        return VariantPool(tuple(distinct), discrete=True)
    train = distinct_variants(family, "train") or []
    novel = [t for t in distinct if t.task_id not in {u.task_id for u in train}]
    return VariantPool(tuple(novel + list(train)), discrete=True, required=tuple(range(len(novel))))


def check_way(way: int, pool: VariantPool, split: str, family: str, training: bool = True) -> None:
    """Raise a clear ``ValueError`` when ``way`` exceeds the variants the split can produce.

    The advice fits the command: ``--way`` of ``metarl train protonet`` while training; at
    evaluation (``training=False``, where ``way`` is the run's) another split or run.
    """
    if way > len(pool.tasks):
        kind = "distinct variants" if pool.discrete else "variants in the pool"
        raise ValueError(
            f"way={way} is larger than the {len(pool.tasks)} {kind} that the {split} split of {family} "
            f"can produce ({[t.to_dict() for t in pool.tasks] if pool.discrete else 'sampled tasks'}); "
            + (f"use --way {len(pool.tasks)} or less" if training else
               f"evaluate on another split, or on a run trained with `metarl train protonet --way "
               f"{len(pool.tasks)}` or less")
        )


# ----------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class TrainedProtoNet:
    """A trained encoder with what is needed to use and evaluate it."""

    config: ProtoNetConfig
    encoder: ContextEncoder
    handmade_mean: np.ndarray  # [2*obs_dim + 2] standardisation of the hand-made baseline
    handmade_std: np.ndarray  # [2*obs_dim + 2]
    train_tasks: tuple[Task, ...]
    history: list[dict[str, float]]


class ProtoNetTrainer:
    """Episodic training of a :class:`ContextEncoder`, one Adam step at a time.

    Construction is deterministic in ``config.seed``: it draws the training
    variants, collects their trajectories (the training pool), initialises the
    encoder and fits the feature normalisation. :meth:`step` then runs one
    Adam step on ``episodes_per_iteration`` random episodes. :meth:`state` /
    :meth:`load_state` hold what changes between steps (weights, Adam, the
    episode stream), so a resumed run continues exactly as an uninterrupted one.

    Args:
        config: hyperparameters.
        device: where the encoder trains.
        behaviour: how training transitions are collected; uniform random actions by default.
        progress: show a progress bar while collecting.
    """

    def __init__(
        self,
        config: ProtoNetConfig,
        device: torch.device | str = "cpu",
        behaviour: Behaviour | None = None,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        rng = np.random.default_rng(config.seed)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        self.obs_dim, self.act_dim = env_dims(config.family)
        self.pool = variant_pool(config.family, "train", config.train_variants, rng)
        check_way(config.way, self.pool, "train", config.family)
        # Discrete families spread the same number of trajectories over their few variants.
        self.envs_per_variant = config.envs_per_variant
        if self.pool.discrete:
            self.envs_per_variant = max(
                config.envs_per_variant, config.train_variants * config.envs_per_variant // len(self.pool.tasks)
            )
        self.transitions = collect_transitions(
            config.family, self.pool.tasks, self.envs_per_variant, config.episode_length, behaviour,
            seed=int(rng.integers(2**31)), progress=progress,
        )  # [variants, envs_per_variant, episode_length, dim]
        self.encoder = ContextEncoder(self.obs_dim, self.act_dim, config.hidden_sizes, config.embedding_dim,
                                      config.pooled_hidden_sizes, config.handmade_features)
        self.encoder.reset_parameters(generator)
        self.encoder.fit_normalisation(torch.from_numpy(self.transitions))
        self.encoder.to(self.device)
        variants = np.arange(len(self.pool.tasks))
        handmade = handmade_statistics(
            sample_contexts(self.transitions, variants, self.envs_per_variant, config.context_size, rng),
            self.obs_dim, self.act_dim,
        ).reshape(-1, 2 * self.obs_dim + 2)
        self.handmade_mean = handmade.mean(axis=0)
        std = handmade.std(axis=0)
        self.handmade_std = np.where(std > 1e-9, std, 1.0)
        self.encoder.handmade_mean.copy_(torch.as_tensor(self.handmade_mean))
        self.encoder.handmade_std.copy_(torch.as_tensor(self.handmade_std))
        self.optimiser = torch.optim.Adam(self.encoder.parameters(), lr=config.learning_rate)
        self.episode_rng = rng  # the stream of training episodes, from here on
        self.iteration = 0
        self.history: list[dict[str, float]] = []

    def step(self) -> tuple[float, float]:
        """One Adam step on a batch of episodes; returns (loss, accuracy) of the batch."""
        config = self.config
        per_variant = config.shot + config.query
        chosen = np.stack([self.episode_rng.choice(len(self.pool.tasks), size=config.way, replace=False)
                           for _ in range(config.episodes_per_iteration)])  # [episodes, way]
        contexts = sample_contexts(self.transitions, chosen.reshape(-1), per_variant, config.context_size,
                                   self.episode_rng)
        contexts = torch.from_numpy(contexts).to(self.device)  # [episodes*way, shot+query, C, dim]
        embeddings = self.encoder(contexts).reshape(config.episodes_per_iteration, config.way, per_variant, -1)
        loss, accuracy = prototypical_loss(embeddings[:, :, : config.shot], embeddings[:, :, config.shot :])
        # Cosine decay of the step size over the run (Loshchilov & Hutter 2017).
        progress = self.iteration / config.iterations
        for group in self.optimiser.param_groups:
            group["lr"] = config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        self.iteration += 1
        return float(loss.detach()), float(accuracy)

    def train(
        self,
        iterations: int,
        log: Callable[[int, dict[str, float]], None] | None = None,
        log_every: int = 50,
        should_stop: Callable[[], bool] = lambda: False,
        progress: bool = True,
    ) -> None:
        """Step until ``iterations`` are done (or ``should_stop()`` after a step).

        ``log(iteration, metrics)`` gets ``train/loss``, ``train/accuracy``
        (means since the last call) and ``time/seconds`` every ``log_every``
        iterations and at the end; the same rows go to :attr:`history`.
        """
        sums = np.zeros(2)
        count = 0
        start = time.perf_counter() - (self.history[-1]["time/seconds"] if self.history else 0.0)
        bar = tqdm(total=iterations, initial=self.iteration, desc=f"protonet {self.config.family}",
                   disable=not progress)
        while self.iteration < iterations:
            sums += self.step()
            count += 1
            bar.update(1)
            if self.iteration % log_every == 0 or self.iteration == iterations:
                metrics = {"train/loss": sums[0] / count, "train/accuracy": sums[1] / count,
                           "time/seconds": time.perf_counter() - start}
                self.history.append({"iteration": self.iteration, **metrics})
                bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", acc=f"{metrics['train/accuracy']:.3f}")
                if log is not None:
                    log(self.iteration, metrics)
                sums, count = np.zeros(2), 0
            if should_stop():
                break
        bar.close()

    def trained(self) -> TrainedProtoNet:
        """The encoder (a CPU copy, in eval mode) with its baseline statistics."""
        encoder = ContextEncoder(self.obs_dim, self.act_dim, self.config.hidden_sizes, self.config.embedding_dim,
                                 self.config.pooled_hidden_sizes, self.config.handmade_features)
        encoder.load_state_dict({k: v.detach().cpu() for k, v in self.encoder.state_dict().items()})
        encoder.handmade_mean.copy_(torch.as_tensor(self.handmade_mean))
        encoder.handmade_std.copy_(torch.as_tensor(self.handmade_std))
        return TrainedProtoNet(self.config, encoder.eval(), self.handmade_mean, self.handmade_std,
                               tuple(self.pool.tasks), list(self.history))

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Checkpoint contents: ``(tensors, metadata)`` for :func:`metarl.storage.checkpoint.save_checkpoint`."""
        tensors = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        tensors["handmade.mean"] = torch.as_tensor(self.handmade_mean, dtype=torch.float64)
        tensors["handmade.std"] = torch.as_tensor(self.handmade_std, dtype=torch.float64)
        optimiser_tensors, optimiser_tree = flatten_state(self.optimiser.state_dict(), "optimiser.")
        tensors.update(optimiser_tensors)
        metadata = {
            "method": "protonet",
            "family": self.config.family,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "config": self.config.to_dict(),
            "iteration": self.iteration,
            "episode_rng": self.episode_rng.bit_generator.state,
            "optimiser": optimiser_tree,
            "train_tasks": [task.to_dict() for task in self.pool.tasks],
            "history": self.history,
        }
        return tensors, metadata

    def load_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any], where: Any = "") -> None:
        """Continue from a :meth:`state` of a run with the same configuration."""
        if metadata.get("config") != self.config.to_dict() | {"iterations": metadata.get("config", {}).get("iterations")}:
            raise CheckpointError(f"checkpoint {where} was written by a run with another configuration")
        check_compatible(metadata, self.config.family, self.obs_dim, self.act_dim, where)
        iteration = read_int(metadata, "iteration", where)
        episode_rng = restore_numpy_generator(metadata.get("episode_rng"), where, "episode_rng")
        history = metadata.get("history")
        if not isinstance(history, list) or not all(
            isinstance(row, dict)
            and all(isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) for k, v in row.items())
            for row in history
        ):
            raise CheckpointError(f"checkpoint {where}: metadata field 'history' must be a list of "
                                  "{metric name: number} rows")
        try:
            self.encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in tensors.items()
                                          if k.startswith("encoder.")})
            optimiser_state = unflatten_state(tensors, metadata.get("optimiser"))
            if not isinstance(optimiser_state, dict):
                raise ValueError(f"it is a {type(optimiser_state).__name__}, not an optimiser state")
            self.optimiser.load_state_dict(optimiser_state)
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as error:
            raise CheckpointError(f"checkpoint {where}: the encoder or metadata field 'optimiser' does not fit "
                                  f"this run ({error})") from None
        self.episode_rng.bit_generator.state = episode_rng.bit_generator.state
        self.iteration = iteration
        self.history = list(history)


def train_protonet(
    config: ProtoNetConfig,
    device: torch.device | str = "cpu",
    behaviour: Behaviour | None = None,
    progress: bool = True,
) -> TrainedProtoNet:
    """Collect the training pool and train for ``config.iterations`` (no run directory)."""
    trainer = ProtoNetTrainer(config, device, behaviour, progress)
    trainer.train(config.iterations, progress=progress)
    return trainer.trained()


# ----------------------------------------------------------------------------
# Run directories
# ----------------------------------------------------------------------------


def run_config(config: ProtoNetConfig, behaviour_run: str | None, device: str) -> dict[str, Any]:
    """``config.json`` of a protonet run: the method, the hyperparameters and the behaviour."""
    return {"method": "protonet", **config.to_dict(), "behaviour_run": behaviour_run, "device": device}


def behaviour_from_run(path: str | os.PathLike[str] | None, family: str) -> Behaviour | None:
    """The policy of a run directory (e.g. a MAML run) as a behaviour; ``None`` for uniform random."""
    if path is None:
        return None
    run = RunDir(path)
    config = run.read_config()
    if config["family"] != family:
        raise ValueError(
            f"behaviour run {path} was trained on {config['family']!r}, but contexts are collected in "
            f"{family!r}; pass a run of {family!r} or no behaviour run (uniform random actions)"
        )
    action_space = gym.make(envs.env_id(family)).action_space
    return GaussianPolicyBehaviour(load_policy(run, config), action_map=ActionMap.from_space(action_space))


def check_pool_memory(config: ProtoNetConfig, allow_large: bool = False) -> None:
    """Refuse a training pool (and training episodes) above half of this machine's memory."""
    obs_dim, act_dim = env_dims(config.family)
    transition = 4 * (2 * obs_dim + act_dim + 1)
    pool = config.train_variants * config.envs_per_variant * config.episode_length * (transition + ENV_BYTES // 64)
    episode = (config.episodes_per_iteration * config.way * (config.shot + config.query) * config.context_size
               * 4 * (sum(config.hidden_sizes) + config.embedding_dim) * 4)
    check_memory(
        "the ProtoNet training pool", pool + episode,
        f"--train-variants {config.train_variants} x {config.envs_per_variant} episodes x {config.episode_length} "
        f"steps; --way {config.way} x (--shot {config.shot} + --query {config.query}) x --context "
        f"{config.context_size}", allow_large,
    )


def train_run(
    config: ProtoNetConfig,
    out: str | os.PathLike[str],
    device: str = "auto",
    resume: bool = False,
    behaviour_run: str | None = None,
    progress: bool = True,
    checkpoint_every: int = 500,
    allow_large: bool = False,
) -> RunDir:
    """Train into a run directory: config.json, metrics.csv + TensorBoard, checkpoint.

    Bad input (a directory of another run, a corrupted checkpoint, a behaviour
    run of another family) is refused before anything is written. Ctrl-C stops
    after the current iteration, saves a checkpoint and re-raises
    ``KeyboardInterrupt``; ``resume=True`` continues it exactly.
    """
    check_pool_memory(config, allow_large)
    document = run_config(config, None if behaviour_run is None else str(behaviour_run), device)
    with writing_run(out, document, resume) as run, sigterm_as_interrupt():
        behaviour = behaviour_from_run(behaviour_run, config.family)
        trainer = ProtoNetTrainer(config, resolve_device(device), behaviour, progress)
        if resume:
            if run.checkpoint_path.exists():
                tensors, metadata = load_checkpoint(run.checkpoint_path)
                trainer.load_state(tensors, metadata, run.checkpoint_path)
                check_resume(run, trainer.iteration, config.iterations)
            else:
                check_resume(run, None, config.iterations)
        run.write_config(document)

        def save() -> None:
            save_checkpoint(run.checkpoint_path, *trainer.state())

        save()
        logger = MetricsLogger(run, start_iteration=trainer.iteration)

        def log(iteration: int, metrics: dict[str, float]) -> None:
            logger.log(iteration, metrics)
            if iteration % checkpoint_every == 0:
                save()

        with deferred_interrupts() as stop:
            try:
                trainer.train(config.iterations, log=log, should_stop=lambda: bool(stop), progress=progress)
            finally:
                logger.close()
            save()
        if stop:
            print(f"\ninterrupted: saved iteration {trainer.iteration} in {run.checkpoint_path}; continue with "
                  "--resume", file=sys.stderr)
            raise stop.interrupt(f"stopped after iteration {trainer.iteration}; continue with --resume")
    return run


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


# ----------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------


def few_shot_accuracy(
    embeddings: np.ndarray,
    way: int,
    shot: int,
    queries: int,
    episodes: int,
    rng: np.random.Generator,
    required: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy of the prototype classifier over random few-shot episodes.

    Args:
        embeddings: ``[variants, contexts, E]`` embeddings of every context of the pool.
        way, shot, queries: N variants per episode, K support and Q query contexts each.
        episodes: number of random episodes.
        rng: draws the variants and contexts of each episode.
        required: variant indices present in every episode (the rest is drawn at random).

    Returns:
        ``(episode_accuracy [episodes], required_accuracy [episodes])``: the accuracy over all
        queries of each episode, and over the queries of the required variants (NaN without any).
    """
    variants, contexts, _ = embeddings.shape
    if shot + queries > contexts:
        raise ValueError(f"shot + queries ({shot + queries}) exceeds the {contexts} contexts per variant")
    required = list(required)[:way]
    others = np.setdiff1d(np.arange(variants), required)
    accuracy = np.zeros(episodes)
    required_accuracy = np.full(episodes, np.nan)
    for episode in range(episodes):
        chosen = np.concatenate([required, rng.choice(others, size=way - len(required), replace=False)])
        chosen = chosen.astype(int)
        picks = np.stack([rng.permutation(contexts)[: shot + queries] for _ in range(way)])  # [way, K+Q]
        selected = embeddings[chosen[:, None], picks]  # [way, K+Q, E]
        prototypes = selected[:, :shot].mean(axis=1)  # [way, E]
        query = selected[:, shot:].reshape(way * queries, -1)  # [way*Q, E]
        distances = ((query[:, None] - prototypes[None]) ** 2).sum(axis=-1)  # [way*Q, way]
        correct = distances.argmin(axis=1) == np.repeat(np.arange(way), queries)
        accuracy[episode] = correct.mean()
        if required:
            required_accuracy[episode] = correct[: len(required) * queries].mean()
    return accuracy, required_accuracy


def mean_ci95(values: np.ndarray) -> dict[str, Any]:
    """``{"mean", "ci95": [lo, hi]}`` with the normal-approximation 95% interval."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    half = 1.96 * float(values.std(ddof=1)) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return {"mean": mean, "ci95": [mean - half, mean + half]}


def evaluate_identification(
    trained: TrainedProtoNet,
    split: str,
    way: int | None = None,
    shot: int | None = None,
    queries: int = 15,
    episodes: int = 600,
    context_sizes: Sequence[int] = EVAL_CONTEXT_SIZES,
    eval_variants: int = 100,
    seed: int = EVAL_SEED,
    behaviour: Behaviour | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Few-shot identification accuracy on unseen variants of ``split`` (see the module docstring).

    Args:
        trained: the trained encoder.
        split: ``"test"`` or ``"ood"``.
        way, shot: N and K of the episodes; the training run's by default.
        queries: query contexts per variant and episode.
        episodes: random episodes per context size.
        context_sizes: the C values of the table.
        eval_variants: tasks sampled for a continuous family's pool.
        seed: seeds the variants, the contexts and the episodes.
        behaviour: how contexts are collected; uniform random actions by default.

    Returns:
        The ``eval_<split>.json`` document: ``accuracy`` = {C: {mean, ci95}}, the same for
        ``baselines.handmade_statistics`` and ``baselines.chance``, and the settings.
    """
    if split not in ("test", "ood"):
        raise ValueError(f"split must be 'test' or 'ood' (variants never seen in training), got {split!r}")
    config = trained.config
    way = config.way if way is None else way
    shot = config.shot if shot is None else shot
    for name, value in (("way", way), ("shot", shot), ("queries", queries), ("episodes", episodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if way < 2:
        raise ValueError(f"way must be >= 2, got {way}")
    sizes = sorted({check_context_size(c) for c in context_sizes})
    if not sizes:
        raise ValueError("context_sizes must hold at least one context size")
    rng = np.random.default_rng(seed)
    pool = variant_pool(config.family, split, eval_variants, rng)
    check_way(way, pool, split, config.family, training=False)
    encoder = trained.encoder
    obs_dim, act_dim = encoder.obs_dim, encoder.act_dim
    start = time.perf_counter()
    contexts = collect_contexts(config.family, pool.tasks, shot + queries + 5, max(sizes), behaviour,
                                seed=int(rng.integers(2**31)), progress=progress)
    # contexts  # [variants, contexts, max C, dim]
    collect_seconds = time.perf_counter() - start
    accuracy: dict[str, Any] = {}
    handmade_accuracy: dict[str, Any] = {}
    novel_accuracy: dict[str, Any] = {}
    episode_seed = int(rng.integers(2**31))
    for size in tqdm(sizes, desc=f"evaluate {split}", disable=not progress, leave=False):
        prefix = torch.from_numpy(contexts[:, :, :size])  # [variants, contexts, C, dim]
        with torch.no_grad():
            learned = encoder(prefix).numpy()  # [variants, contexts, E]
        handmade = (handmade_statistics(prefix.numpy(), obs_dim, act_dim) - trained.handmade_mean) / trained.handmade_std
        # The same episodes (same generator state) for both classifiers: a paired comparison.
        acc, acc_required = few_shot_accuracy(learned, way, shot, queries, episodes,
                                              np.random.default_rng(episode_seed), pool.required)
        base, _ = few_shot_accuracy(handmade, way, shot, queries, episodes,
                                    np.random.default_rng(episode_seed), pool.required)
        accuracy[str(size)] = mean_ci95(acc)
        handmade_accuracy[str(size)] = mean_ci95(base)
        if pool.required:
            novel_accuracy[str(size)] = mean_ci95(acc_required)
    # Online cost: embedding one context of 16 transitions.
    one = torch.from_numpy(contexts[0, 0, :16])
    with torch.no_grad():
        timer = time.perf_counter()
        for _ in range(100):
            encoder(one)
        embed_seconds = (time.perf_counter() - timer) / 100
    document = IdentificationDocument(
        method="protonet",
        protocol=IdentificationProtocol(family=config.family, split=split, variants=len(pool.tasks), way=way,
                                        shot=shot, queries=queries, episodes=episodes, eval_seed=seed),
        discrete_variants=pool.discrete,
        accuracy={size: Interval(**value) for size, value in accuracy.items()},
        handmade_statistics={size: Interval(**value) for size, value in handmade_accuracy.items()},
        chance={str(size): Interval(1.0 / way, (1.0 / way, 1.0 / way)) for size in sizes},
        collect_seconds=collect_seconds,
        embed_seconds_per_context16=embed_seconds,
        params=sum(p.numel() for p in encoder.parameters()),
        novel_variants=tuple(pool.tasks[i].to_dict() for i in pool.required) if pool.required else None,
        accuracy_novel_queries={size: Interval(**value) for size, value in novel_accuracy.items()}
        if pool.required else None,
        variant_tasks=tuple(task.to_dict() for task in pool.tasks) if pool.discrete else None,
    ).to_json()
    return document


def evaluate_protonet_run(
    run_dir: RunDir, config: dict[str, Any], options: EvalOptions, progress: bool = True
) -> dict[str, Any]:
    """``metarl evaluate`` for protonet runs: :func:`evaluate_identification`, written to ``eval_<split>.json``.

    ``options.num_tasks`` is the number of variants of a continuous family's
    pool, ``options.seed`` the evaluation seed; episodes use the run's way and
    shot. Contexts are collected with the run's behaviour.
    """
    if options.tasks is not None or options.samples_per_step is not None:
        flag = "--tasks" if options.tasks is not None else "--samples-per-step"
        raise ValueError(f"{flag} is for runs that adapt by gradient steps; a protonet run identifies "
                         "among the variants of a split: use --split test|ood")
    trained = load_trained(run_dir.path)
    behaviour = behaviour_from_run(config.get("behaviour_run"), trained.config.family)
    document = evaluate_identification(trained, options.split, eval_variants=options.num_tasks,
                                       seed=options.seed, behaviour=behaviour, progress=progress)
    write_eval_json(run_dir, document)
    return document


def format_accuracy_report(document: dict[str, Any]) -> str:
    """A heading and a markdown table of an ``eval_<split>.json`` document (accuracy per context size)."""
    lines = [
        f"protonet on {document['family']} ({document['split']} split, {document['variants']} variants, "
        f"{document['way']}-way {document['shot']}-shot, {document['queries']} queries, "
        f"{document['episodes']} episodes): identification accuracy, mean ± 95% CI",
        "",
        "| C | ProtoNet | hand-made statistics | chance |",
        "|---|---|---|---|",
    ]
    for size, value in document["accuracy"].items():
        base = document["baselines"]["handmade_statistics"][size]
        chance = document["baselines"]["chance"][size]["mean"]
        lines.append(f"| {size} | {_percent(value)} | {_percent(base)} | {100 * chance:.1f}% |")
    if "accuracy_novel_queries" in document:
        novel = ", ".join(f"C={size}: {_percent(value)}" for size, value in document["accuracy_novel_queries"].items())
        lines += ["", f"queries of the novel variants only: {novel}"]
    return "\n".join(lines)


def _percent(value: dict[str, Any]) -> str:
    low, high = value["ci95"]
    return f"{100 * value['mean']:.1f}% ± {100 * (high - low) / 2:.1f}"
