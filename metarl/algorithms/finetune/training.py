"""Pretraining on the task mixture (``metarl train finetune``) through the training loop, and reading a run back."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from tqdm import tqdm

import metarl_envs as envs
from metarl.algorithms.finetune.config import (
    _SEED_LIMIT,
    METHOD,
    WEIGHTS_FILE,
    FinetuneConfig,
    ModelSpec,
    steps_per_round,
)
from metarl.algorithms.finetune.envs import make_vec_env, wrap_normalization
from metarl.algorithms.finetune.model import (
    build_model,
    isolated_global_rng,
    load_pretrained,
    model_state,
    save_pretrained,
)
from metarl.algorithms.finetune.registry import adapter
from metarl.algorithms.finetune.snapshot import (
    NotResumable,
    algorithm_state,
    global_rng_state,
    set_algorithm_state,
    set_global_rng_state,
    set_venv_state,
    venv_state,
)
from metarl.core.device import resolve_device
from metarl.core.interrupts import sigterm_as_interrupt
from metarl.core.validation import check_memory
from metarl.storage.checkpoint import (
    CheckpointError,
    check_compatible,
    load_checkpoint,
    read_int,
)
from metarl.storage.runs import (
    CHECKPOINT_DIR,
    ENV_BYTES,
    MetricsLogger,
    RunDir,
    RunDirError,
    check_resume,
    writing_run,
)
from metarl.training.loop import LoopOptions, train_loop

TRAINING_STATE_FORMAT = "metarl-finetune-pretraining/1"
"""Tag of a pretraining checkpoint (``checkpoint/latest.safetensors``) in its metadata."""


class StepProgress(BaseCallback):
    """Advances a progress bar by the env steps of every vector-env step of ``learn``."""

    def __init__(self, bar: tqdm) -> None:
        super().__init__()
        self.bar = bar

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True


def _plan(config: FinetuneConfig) -> tuple[int, int, int, int]:
    """Steps per round, rounds, rounds per iteration and iterations of ``config``'s pretraining."""
    per_round = steps_per_round(config.algo, config.spec().hyperparameters, config.num_envs)
    rounds = config.pretrain_steps // per_round
    per_iteration = adapter(config.algo).rounds_per_iteration(envs.family_spec(config.family).horizon)
    return per_round, rounds, per_iteration, -(-rounds // per_iteration)


class _RoundMonitor(BaseCallback):
    """Sums each env's running episode return during ``learn``; keeps the returns of episodes that end."""

    def __init__(self, num_envs: int) -> None:
        super().__init__()
        self.running = np.zeros(num_envs)  # [num_envs], the unfinished episodes' returns so far
        self.finished: list[float] = []

    def _on_step(self) -> bool:
        rewards, dones = np.asarray(self.locals["rewards"]), np.asarray(self.locals["dones"])
        self.running += rewards
        self.finished += [float(r) for r in self.running[dones]]
        self.running[dones] = 0.0
        return True


class PretrainTrainer:
    """Pretraining on the train-task mixture as a :class:`metarl.training.loop.Trainer`.

    One iteration is ``rounds_per_iteration`` collection rounds of stable-baselines3's
    ``learn`` (PPO: one rollout and its update; :meth:`.adapter.SB3Adapter.rounds_per_iteration`).
    Every call into SB3 runs on the trainer's own copy of the global python / numpy /
    torch generators, seeded from the run seed (:func:`isolated_global_rng`) and carried
    from one iteration to the next, so the iterations together draw exactly what one
    uninterrupted ``learn`` would. :meth:`state` captures everything a continued
    ``learn`` reads (:mod:`.snapshot`); ``restore`` puts it back.

    Args:
        config: the run's configuration.
        device: torch device of the model.
        restore: a checkpoint ``(tensors, metadata)`` written from :meth:`state`, to continue from.
    """

    def __init__(self, config: FinetuneConfig, device: torch.device,
                 restore: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None) -> None:
        self.config, self.spec, self.algorithm = config, config.spec(), adapter(config.algo)
        self.steps_per_round, self.rounds, self.rounds_per_iteration, self.iterations = _plan(config)
        self._iteration = 0
        self._monitor = _RoundMonitor(config.num_envs)
        env_seed, sb3_seed = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(config.seed).spawn(2))
        with isolated_global_rng(sb3_seed):
            venv = make_vec_env(self.spec, config.num_envs, np.random.default_rng(env_seed))
            venv.seed(env_seed % _SEED_LIMIT)
            self.venv = wrap_normalization(self.spec, venv, training=True)
            self.model = build_model(self.spec, self.venv, device)
            if restore is not None and int(restore[1]["iteration"]) > 0:  # iteration 0: the fresh start above
                self._restore(*restore)
            self._rng = global_rng_state()

    def _restore(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        if not metadata.get("resumable"):
            raise CheckpointError(f"this checkpoint cannot be resumed: {metadata.get('not_resumable_because')}")
        self.venv.reset()  # start every sub-env (gymnasium's order checks) before its state is overwritten
        set_venv_state(self.venv, tensors, metadata["venv"])
        set_algorithm_state(self.model, tensors, metadata["sb3"])
        set_global_rng_state(tensors, metadata["global_rng"])
        self._monitor.running = tensors["monitor/running"].numpy().copy()
        self._iteration = int(metadata["iteration"])

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        """Run the block on the trainer's global generator states; keep what it leaves, restore the caller's."""
        outside = global_rng_state()
        set_global_rng_state(*self._rng)
        try:
            yield
        finally:
            self._rng = global_rng_state()
            set_global_rng_state(*outside)

    @property
    def iteration(self) -> int:
        return self._iteration

    def step(self) -> dict[str, float]:
        """Train the next ``rounds_per_iteration`` rounds (fewer at the end); return their metrics."""
        done = self._iteration * self.rounds_per_iteration
        rounds = min(self.rounds_per_iteration, self.rounds - done)
        start = time.perf_counter()
        with self._own_rng():
            self.model.learn(total_timesteps=rounds * self.steps_per_round, callback=self._monitor,
                             reset_num_timesteps=self._iteration == 0)
        seconds = time.perf_counter() - start
        self._iteration += 1
        finished, self._monitor.finished = self._monitor.finished, []
        return {"train/episode_return": float(np.mean(finished)) if finished else math.nan,
                "train/episodes": float(len(finished)),
                "train/timesteps": float(self.model.num_timesteps),
                "time/steps_per_second": rounds * self.steps_per_round / max(seconds, 1e-9)}

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, metadata)`` after the last completed iteration (only the start at iteration 0)."""
        metadata: dict[str, Any] = {
            "method": METHOD, "family": self.spec.family, "obs_dim": self.spec.obs_dim, "act_dim": self.spec.act_dim,
            "training_state": TRAINING_STATE_FORMAT, "model": self.spec.to_dict(), "iteration": self._iteration,
            "iterations": self.iterations, "env_steps": int(self.model.num_timesteps), "resumable": True,
        }
        if self._iteration == 0:  # everything follows from the run seed
            return {}, metadata
        tensors, metadata["sb3"] = algorithm_state(self.model)
        rng_tensors, metadata["global_rng"] = self._rng
        tensors.update({name: value.clone() for name, value in rng_tensors.items()})
        tensors["monitor/running"] = torch.from_numpy(self._monitor.running.copy())
        if not self.algorithm.resumable:
            metadata.update(resumable=False, not_resumable_because=f"{self.spec.algo} pretraining does not save "
                            "its replay buffer")
            return tensors, metadata
        try:
            venv_tensors, metadata["venv"] = venv_state(self.venv)
        except NotResumable as error:
            metadata.update(resumable=False, not_resumable_because=str(error))
            return tensors, metadata
        tensors.update(venv_tensors)
        return tensors, metadata

    def pretrained(self) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
        """The model description and weights (:func:`model_state`) to save as the run's result."""
        return self.spec, model_state(self.model, self.venv)

    def close(self) -> None:
        self.venv.close()


def pretrain(config: FinetuneConfig, device: torch.device,
             metrics: MetricsLogger | None = None) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """Pretrain an SB3 agent on the train-task mixture (no run directory); return its description and weights."""
    trainer = PretrainTrainer(config, device)
    try:
        while trainer.iteration < trainer.iterations:
            row = trainer.step()
            if metrics is not None:
                metrics.log(trainer.iteration, row)
        return trainer.pretrained()
    finally:
        trainer.close()


def checkpoint_path(run_dir: RunDir) -> Path:
    """Where a fine-tune run keeps its pretrained weights: ``checkpoint/policy.safetensors``."""
    return run_dir.path / CHECKPOINT_DIR / WEIGHTS_FILE


def train_run(config: FinetuneConfig, out: str | os.PathLike, device_name: str = "auto",
              allow_large: bool = False, resume: bool = False, progress: bool = True) -> RunDir:
    """``metarl train finetune``: pretrain through the training loop, then write the weights into ``out``.

    The directory is locked while it is written. Ctrl-C or SIGTERM saves the state of the
    last completed round in ``checkpoint/latest.safetensors``; ``resume=True`` (``--resume``)
    continues from it bit-exactly on CPU (PPO; SAC pretraining cannot be resumed). The
    pretrained weights (``checkpoint/policy.safetensors``) are written once pretraining ends.
    """
    device = resolve_device(device_name)
    check_memory("pretraining", config.num_envs * ENV_BYTES, f"--num-envs {config.num_envs}", allow_large)
    with writing_run(out, config.to_config(device_name), resume=resume) as run_dir, sigterm_as_interrupt():
        restore = _resume_point(run_dir, config) if resume else None
        if not resume:
            run_dir.write_config(config.to_config(device_name))
        trainer = PretrainTrainer(config, device, restore)
        try:
            options = LoopOptions(iterations=trainer.iterations, desc=f"pretrain {config.algo} {config.family}",
                                  progress=progress, tensorboard=True, unit="round",
                                  postfix=lambda row: {"ret": f"{row['train/episode_return']:.1f}"})
            try:
                train_loop(run_dir, trainer, options)
            except KeyboardInterrupt:
                if not trainer.algorithm.resumable:
                    print(f"note: {config.algo} pretraining cannot be resumed (its replay buffer is not saved); "
                          f"start it again in a new --out directory", file=sys.stderr)
                raise
            save_pretrained(checkpoint_path(run_dir), *trainer.pretrained())
        finally:
            trainer.close()
    return run_dir


def _resume_point(run_dir: RunDir, config: FinetuneConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The checkpoint ``--resume`` continues from (None: none yet, start afresh); refuses what cannot continue."""
    if checkpoint_path(run_dir).is_file():
        raise RunDirError(f"--resume: {run_dir.path} has finished pretraining (its weights "
                          f"{checkpoint_path(run_dir)} exist); evaluate it, or start a new run in another --out")
    if not adapter(config.algo).resumable:
        raise RunDirError(f"--resume: {config.algo} pretraining cannot be resumed (its replay buffer is not "
                          f"saved); start it again in a new --out directory")
    if not run_dir.checkpoint_path.is_file():
        check_resume(run_dir, None, 0)
        return None
    tensors, metadata = load_checkpoint(run_dir.checkpoint_path)
    if metadata.get("method") != METHOD or metadata.get("training_state") != TRAINING_STATE_FORMAT:
        raise CheckpointError(f"{run_dir.checkpoint_path} is not a fine-tune pretraining checkpoint (method "
                              f"{metadata.get('method')!r}, state {metadata.get('training_state')!r})")
    check_compatible(metadata, config.family, config.spec().obs_dim, config.spec().act_dim, run_dir.checkpoint_path)
    if metadata.get("model") != config.spec().to_dict():
        raise CheckpointError(f"{run_dir.checkpoint_path} describes another model than the run's config.json")
    iteration = read_int(metadata, "iteration", run_dir.checkpoint_path)
    check_resume(run_dir, iteration, _plan(config)[3])
    return tensors, metadata


def load_run(path: str | os.PathLike) -> tuple[FinetuneConfig, ModelSpec, dict[str, torch.Tensor]]:
    """Read a fine-tune run directory: its config, model description and weights.

    Raises:
        FileNotFoundError: not a run directory, or no weights in it.
        ValueError: a run of another method, or corrupted weights.
    """
    run_dir = RunDir(path)
    config = FinetuneConfig.from_config(run_dir.read_config())
    spec, state = load_pretrained(checkpoint_path(run_dir))
    if spec.family != config.family:
        raise CheckpointError(f"{checkpoint_path(run_dir)} is for {spec.family!r} but the run is {config.family!r}")
    return config, spec, state
