"""ProtoNet run directories: train into one (config.json, metrics, checkpoint) and its behaviour run."""

from __future__ import annotations

import os
import sys
from typing import Any

import gymnasium as gym

import metarl_envs as envs
from metarl.core.device import resolve_device
from metarl.core.interrupts import deferred_interrupts, sigterm_as_interrupt
from metarl.core.policy import ActionMap
from metarl.core.sampler import env_dims
from metarl.core.validation import check_memory
from metarl.identification.config import ProtoNetConfig
from metarl.identification.contexts import Behaviour, GaussianPolicyBehaviour
from metarl.identification.trainer import ProtoNetTrainer
from metarl.storage.checkpoint import load_checkpoint, save_checkpoint
from metarl.storage.runs import (
    ENV_BYTES,
    MetricsLogger,
    RunDir,
    check_resume,
    load_policy,
    writing_run,
)


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

