"""The flags of ``metarl train finetune`` (:class:`TrainFinetuneArgs`) and :func:`run`, which trains from them.

``metarl train finetune`` pretrains a stable-baselines3 agent on the train-task mixture.

The run directory gets ``config.json`` (method ``finetune``, the pretraining
settings and the fine-tuning recipe that ``metarl evaluate`` applies),
``metrics.csv`` + TensorBoard events (one row per collection round),
``checkpoint/latest.safetensors`` (the training state, for ``--resume``) and,
once pretraining ends, ``checkpoint/policy.safetensors`` (+ ``policy.json``, the
model description). See :mod:`metarl.algorithms.finetune`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Annotated

import torch
import tyro

from metarl.algorithms.finetune import (
    ALGOS,
    FinetuneConfig,
    FinetuneRecipe,
    checkpoint_path,
    default_hyperparameters,
    steps_per_round,
    train_run,
)
from metarl.core.flags import OffSwitch, choice, device_choice, family_choice


@dataclasses.dataclass(frozen=True)
class TrainFinetuneArgs:
    """Pretrain a PPO/SAC agent on a family's train tasks (a fresh task every episode)."""

    env: Annotated[str, family_choice()]
    """Task family (see `metarl envs`)."""
    out: Annotated[str, tyro.conf.arg(metavar="PATH")]
    """Run directory to create (must be new or empty)."""
    algo: Annotated[str, choice(ALGOS)] = "ppo"
    """stable-baselines3 algorithm: ppo or sac."""
    timesteps: int = 200_000
    """Pretraining environment steps on the train-task mixture (> 0), rounded up to whole collection
    rounds of stable-baselines3 (PPO: rollouts of 256 steps x --num-envs; SAC: --num-envs steps); the
    command says the number it trains before it starts."""
    seed: int = 0
    """Run seed; every random draw of the run derives from it."""
    device: Annotated[str, device_choice()] = "auto"
    """Torch device: auto, cpu or cuda."""
    num_envs: int = 8
    """Parallel envs while pretraining."""
    hidden_sizes: tuple[int, ...] = (100, 100)
    """Hidden layer widths of the policy and of the critic."""
    normalize_obs: bool = True
    """Normalise observations with statistics learnt while pretraining (frozen afterwards)."""
    learning_rate: float = 3e-4
    """Adam learning rate while pretraining."""
    freeze: int = 0
    """Fine-tuning: number of lowest policy layers (hidden layers, then the head) kept frozen."""
    new_head: bool = False
    """Fine-tuning: replace the action head with a freshly initialised layer (keeps the body)."""
    finetune_lr: float = 3e-4
    """Fine-tuning: Adam learning rate."""
    ppo_epochs: int = 10
    """Fine-tuning (PPO): passes over each budget chunk per update."""
    allow_large: bool = False
    """Allow --num-envs whose memory estimate exceeds half of this machine's memory."""
    resume: bool = False
    """Continue the interrupted pretraining in --out (same settings) from its last checkpoint."""
    no_progress: OffSwitch = False
    """Hide the progress bar."""

    def to_config(self) -> FinetuneConfig:
        """The validated run configuration (raises ``ValueError`` naming the bad flag)."""
        recipe = FinetuneRecipe(freeze=self.freeze, new_head=self.new_head, learning_rate=self.finetune_lr,
                                ppo_epochs=self.ppo_epochs)
        return FinetuneConfig(
            family=self.env, algo=self.algo, timesteps=self.timesteps, seed=self.seed, num_envs=self.num_envs,
            hidden_sizes=self.hidden_sizes, normalize_obs=self.normalize_obs,
            learning_rate=self.learning_rate, recipe=recipe,
        )


def run(args: TrainFinetuneArgs) -> int:
    """Train from parsed flags (the method registry's ``train`` entry); returns the exit status."""
    config = args.to_config()
    # The networks are small: intra-op threads only add contention (the envs step on this core too).
    torch.set_num_threads(1)
    if config.pretrain_steps != config.timesteps:
        per_round = steps_per_round(config.algo, default_hyperparameters(config.algo), config.num_envs)
        print(f"pretraining {config.pretrain_steps:,} steps: --timesteps {config.timesteps:,} rounded up to "
              f"whole collection rounds of {per_round:,} steps ({config.algo} with {config.num_envs} envs)")
    start = time.perf_counter()
    run_dir = train_run(config, args.out, args.device, allow_large=args.allow_large, resume=args.resume,
                        progress=not args.no_progress)
    print(f"pretrained {config.algo} on {config.family} for {config.pretrain_steps:,} steps in "
          f"{time.perf_counter() - start:.0f} s; weights: {checkpoint_path(run_dir)}")
    print(f"evaluate with: metarl evaluate {run_dir.path} --split test")
    return 0
