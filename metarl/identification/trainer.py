"""Episodic training of a ProtoNet context encoder.

Episodic training (Snell et al. 2017) on the train split: each episode draws
``way`` variants, ``shot`` support and ``query`` query contexts of each; the
prototype of a variant is the mean embedding of its support contexts; a query
is scored by the negative squared Euclidean distance to every prototype and
the loss is the cross-entropy of the true variant (:mod:`metarl.identification.encoder`).
The variants are those of :mod:`metarl.identification.variants`.

:class:`ProtoNetTrainer` is a :class:`metarl.training.loop.Trainer`: a run
directory trains through :func:`metarl.training.loop.train_loop`
(:func:`metarl.identification.run.train_run`); :func:`train_protonet` trains
in memory.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from metarl.core.rollout import env_dims
from metarl.identification.config import ProtoNetConfig
from metarl.identification.contexts import Behaviour, collect_transitions, sample_contexts
from metarl.identification.encoder import ContextEncoder, handmade_statistics, prototypical_loss
from metarl.identification.variants import check_way, variant_pool
from metarl.storage.checkpoint import (
    CheckpointError,
    check_compatible,
    flatten_state,
    read_int,
    restore_numpy_generator,
    unflatten_state,
)
from metarl_envs.tasks import Task

#: Iterations per metrics row: a row holds the means of ``train/loss`` and ``train/accuracy`` over them.
LOG_EVERY = 50


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
    episode stream, the metrics summed since the last row), so a resumed run
    continues exactly as an uninterrupted one.

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
        self._sums = np.zeros(2)  # train loss and accuracy summed since the last metrics row
        self._count = 0  # iterations in those sums
        self._start: float | None = None  # perf_counter() of time/seconds = 0, set by the first step
        # What every checkpoint repeats, built once: state() runs after every iteration.
        self._config_dict = config.to_dict()
        self._train_task_dicts = [task.to_dict() for task in self.pool.tasks]

    def step(self) -> dict[str, float]:
        """Iteration ``iteration + 1``: one Adam step on a batch of episodes.

        Returns the metrics row every :data:`LOG_EVERY` iterations and at
        ``config.iterations``: ``train/loss`` and ``train/accuracy`` (means over
        the iterations since the previous row) and ``time/seconds``; the same row
        goes to :attr:`history`. Returns ``{}`` (no row) in between.
        """
        if self._start is None:
            self._start = time.perf_counter() - (self.history[-1]["time/seconds"] if self.history else 0.0)
        self._sums += self._adam_step()
        self._count += 1
        if self.iteration % LOG_EVERY != 0 and self.iteration != self.config.iterations:
            return {}
        metrics = {"train/loss": self._sums[0] / self._count, "train/accuracy": self._sums[1] / self._count,
                   "time/seconds": time.perf_counter() - self._start}
        self.history.append({"iteration": self.iteration, **metrics})
        self._sums, self._count = np.zeros(2), 0
        return metrics

    def _adam_step(self) -> tuple[float, float]:
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

    def train(self, progress: bool = True) -> None:
        """Step until ``config.iterations`` are done (in memory: no run directory, no checkpoints)."""
        bar = tqdm(total=self.config.iterations, initial=self.iteration, desc=f"protonet {self.config.family}",
                   disable=not progress)
        while self.iteration < self.config.iterations:
            metrics = self.step()
            bar.update(1)
            if metrics:
                bar.set_postfix(progress_postfix(metrics))
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
        """Checkpoint contents: ``(tensors, metadata)`` for :func:`metarl.storage.checkpoint.save_checkpoint`.

        Later steps leave it unchanged (the training loop keeps the last one to save
        when the next iteration is interrupted): the tensors and history are copies; the
        configuration and train tasks, which never change, are shared (read them only).
        """
        tensors = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        tensors["handmade.mean"] = torch.as_tensor(self.handmade_mean, dtype=torch.float64)
        tensors["handmade.std"] = torch.as_tensor(self.handmade_std, dtype=torch.float64)
        optimiser_tensors, optimiser_tree = flatten_state(self.optimiser.state_dict(), "optimiser.")
        tensors.update(optimiser_tensors)
        tensors = {key: value.detach().clone() for key, value in tensors.items()}
        metadata = {
            "method": "protonet",
            "family": self.config.family,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "config": self._config_dict,
            "iteration": self.iteration,
            "episode_rng": self.episode_rng.bit_generator.state,
            "optimiser": optimiser_tree,
            "train_tasks": self._train_task_dicts,
            "history": [dict(row) for row in self.history],
            # The metrics of the iterations since the last row, so that a run resumed between rows
            # writes the rows of an uninterrupted one (absent from older checkpoints: none pending).
            "metric_sums": [float(value) for value in self._sums],
            "metric_count": self._count,
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
        sums = metadata.get("metric_sums", [0.0, 0.0])
        if not isinstance(sums, list) or len(sums) != 2 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in sums
        ):
            raise CheckpointError(f"checkpoint {where}: metadata field 'metric_sums' must be a list of 2 finite "
                                  f"numbers (summed train loss and accuracy), got {sums!r}")
        count = read_int(metadata, "metric_count", where) if "metric_count" in metadata else 0
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
        self._sums, self._count = np.array(sums, dtype=np.float64), count
        self._start = None


def progress_postfix(metrics: Mapping[str, float]) -> dict[str, str]:
    """The progress bar's postfix of a metrics row: loss and accuracy, 3 decimals."""
    return {"loss": f"{metrics['train/loss']:.3f}", "acc": f"{metrics['train/accuracy']:.3f}"}


def train_protonet(
    config: ProtoNetConfig,
    device: torch.device | str = "cpu",
    behaviour: Behaviour | None = None,
    progress: bool = True,
) -> TrainedProtoNet:
    """Collect the training pool and train for ``config.iterations`` (no run directory)."""
    trainer = ProtoNetTrainer(config, device, behaviour, progress)
    trainer.train(progress=progress)
    return trainer.trained()
