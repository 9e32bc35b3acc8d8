"""Pretraining on the task mixture (``metarl train finetune``) and reading a run back."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from tqdm import tqdm

import metarl_envs as envs
from metarl.algorithms.finetune.config import _SEED_LIMIT, WEIGHTS_FILE, FinetuneConfig, ModelSpec
from metarl.algorithms.finetune.envs import make_vec_env, wrap_normalization
from metarl.algorithms.finetune.model import (
    build_model,
    isolated_global_rng,
    load_pretrained,
    model_state,
    save_pretrained,
)
from metarl.core.device import resolve_device
from metarl.core.interrupts import sigterm_as_interrupt
from metarl.core.validation import check_memory
from metarl.storage.checkpoint import (
    CheckpointError,
)
from metarl.storage.runs import CHECKPOINT_DIR, ENV_BYTES, MetricsLogger, RunDir, writing_run


class StepProgress(BaseCallback):
    """Advances a progress bar by the env steps of every vector-env step of ``learn``."""

    def __init__(self, bar: tqdm) -> None:
        super().__init__()
        self.bar = bar

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True


class _TrainingMonitor(BaseCallback):
    """Progress bar, and mean episode return per ``log_every`` steps into ``metrics.csv``."""

    def __init__(self, total: int, logger: MetricsLogger | None, log_every: int) -> None:
        super().__init__()
        self._total, self._metrics, self._log_every = total, logger, log_every
        self._bar: tqdm | None = None
        self._running: np.ndarray | None = None
        self._finished: list[float] = []
        self._rows = 0
        self._start = 0.0

    def _on_training_start(self) -> None:
        self._bar = tqdm(total=self._total, desc=f"pretrain {type(self.model).__name__}", unit="step")
        self._running = np.zeros(self.training_env.num_envs)
        self._start = time.perf_counter()

    def _on_step(self) -> bool:
        rewards, dones = np.asarray(self.locals["rewards"]), np.asarray(self.locals["dones"])
        self._running += rewards
        self._finished += [float(r) for r in self._running[dones]]
        self._running[dones] = 0.0
        self._bar.update(self.training_env.num_envs)
        if self.num_timesteps >= (self._rows + 1) * self._log_every and self._finished:
            self._rows += 1
            metrics = {"train/episode_return": float(np.mean(self._finished)),
                       "train/timesteps": float(self.num_timesteps),
                       "time/steps_per_second": self.num_timesteps / (time.perf_counter() - self._start)}
            self._bar.set_postfix(ret=f"{metrics['train/episode_return']:.1f}")
            if self._metrics is not None:
                self._metrics.log(self._rows, metrics)
            self._finished = []
        return True

    def _on_training_end(self) -> None:
        if self._bar is not None:
            self._bar.close()


def pretrain(config: FinetuneConfig, device: torch.device,
             metrics: MetricsLogger | None = None) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """Pretrain an SB3 agent on the train-task mixture; return its description and weights."""
    spec = config.spec()
    horizon = envs.family_spec(config.family).horizon
    env_seed, sb3_seed = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(config.seed).spawn(2))
    with isolated_global_rng(sb3_seed):
        venv = make_vec_env(spec, config.num_envs, np.random.default_rng(env_seed))
        venv.seed(env_seed % _SEED_LIMIT)
        venv = wrap_normalization(spec, venv, training=True)
        model = build_model(spec, venv, device)
        monitor = _TrainingMonitor(config.pretrain_steps, metrics, log_every=10 * horizon * config.num_envs)
        model.learn(total_timesteps=config.timesteps, callback=monitor)
        state = model_state(model, venv)
        venv.close()
    return spec, state


def checkpoint_path(run_dir: RunDir) -> Path:
    """Where a fine-tune run keeps its pretrained weights: ``checkpoint/policy.safetensors``."""
    return run_dir.path / CHECKPOINT_DIR / WEIGHTS_FILE


def train_run(config: FinetuneConfig, out: str | os.PathLike, device_name: str = "auto",
              allow_large: bool = False) -> RunDir:
    """``metarl train finetune``: pretrain, then write config, metrics and weights into ``out``.

    The directory is locked while it is written; an interrupted (Ctrl-C, SIGTERM) or failed
    pretraining leaves no run behind (there is nothing to resume from).
    """
    device = resolve_device(device_name)
    check_memory("pretraining", config.num_envs * ENV_BYTES, f"--num-envs {config.num_envs}", allow_large)
    with writing_run(out, config.to_config(device_name), resume=False) as run_dir, sigterm_as_interrupt():
        run_dir.write_config(config.to_config(device_name))
        metrics = MetricsLogger(run_dir)
        try:
            spec, state = pretrain(config, device, metrics)
        except KeyboardInterrupt:
            # no --resume for stable-baselines3 pretraining: the incomplete run is removed (writing_run)
            print(f"\ninterrupted before the weights were saved: {run_dir.path} was removed (fine-tune "
                  "pretraining cannot be resumed); start it again", file=sys.stderr)
            raise
        finally:
            metrics.close()
        save_pretrained(checkpoint_path(run_dir), spec, state)
    return run_dir


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
