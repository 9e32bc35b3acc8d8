"""ProtoNet run directories: train into one (config.json, metrics, checkpoint), from flags or a config.

``metarl train protonet`` (:class:`TrainProtoNetArgs`, :func:`train_from_args`) writes
``config.json`` (method ``protonet``, every hyperparameter and the behaviour that collects
contexts), ``metrics.csv`` + TensorBoard events (``train/loss``, ``train/accuracy``) and
``checkpoint/latest.safetensors`` (+ ``latest.json``). Evaluate the run with ``metarl evaluate
RUN_DIR --split test|ood``; use it online through ``metarl.TaskIdentifier.load(RUN_DIR)``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Annotated, Any

import gymnasium as gym
import torch
import tyro

import metarl_envs as envs
from metarl.core.device import DEVICE_CHOICES, resolve_device
from metarl.core.flags import OffSwitch, choice, device_choice, family_choice, optional
from metarl.core.interrupts import sigterm_as_interrupt
from metarl.core.policy import ActionMap
from metarl.core.rollout import env_dims
from metarl.core.validation import check_memory
from metarl.identification.config import ProtoNetConfig, preset
from metarl.identification.contexts import Behaviour, GaussianPolicyBehaviour
from metarl.identification.trainer import ProtoNetTrainer, progress_postfix
from metarl.storage.checkpoint import load_checkpoint
from metarl.storage.runs import (
    ENV_BYTES,
    RunDir,
    check_resume,
    load_policy,
    writing_run,
)
from metarl.training.loop import LoopOptions, train_loop


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
    run of another family) is refused before anything is written. Training runs
    through :func:`metarl.training.loop.train_loop`: a checkpoint every
    ``checkpoint_every`` iterations and at the end; Ctrl-C or SIGTERM discards the
    unfinished iteration, saves the last completed one and re-raises
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
                if config.iterations < trainer.iteration:  # refused: --iterations below the checkpoint's
                    check_resume(run, trainer.iteration, config.iterations)
                # metrics.csv holds a row every LOG_EVERY iterations: it must reach the checkpoint's last
                # row, not the checkpoint's iteration (an interrupted run stops between rows).
                check_resume(run, int(trainer.history[-1]["iteration"]) if trainer.history else 0, config.iterations)
            else:
                check_resume(run, None, config.iterations)
        run.write_config(document)
        train_loop(run, trainer, LoopOptions(
            iterations=config.iterations, desc=f"protonet {config.family}", checkpoint_every=checkpoint_every,
            progress=progress, tensorboard=True, postfix=progress_postfix,
        ))
    return run


@dataclasses.dataclass(frozen=True)
class TrainProtoNetArgs:
    """Train a ProtoNet encoder that identifies a family's variant from a few transitions."""

    env: Annotated[str, family_choice()]
    """Task family (see `metarl envs`)."""
    out: Annotated[str, tyro.conf.arg(metavar="PATH")]
    """Run directory to create (must be new or empty; with --resume, the run to continue)."""
    way: int = 5
    """N: variants per training episode (at most the distinct variants of a discrete family)."""
    shot: int = 5
    """K: support contexts per variant (their mean embedding is the variant's prototype)."""
    query: int = 5
    """Q: query contexts per variant in a training episode."""
    context: int = 16
    """C: transitions per context during training."""
    preset: Annotated[str, choice(("default", "tiny"))] = "default"
    """Named settings of everything else: default or tiny (a seconds-long smoke run)."""
    iterations: Annotated[int | None, optional("INT", "the preset's")] = None
    """Adam steps."""
    train_variants: Annotated[int | None, optional("INT", "the preset's")] = None
    """Train tasks in the training pool, 12 episodes each (discrete families spread the same number
    of episodes over their distinct variants)."""
    learning_rate: Annotated[float | None, optional("FLOAT", "the preset's")] = None
    """Initial Adam step size, decayed along a cosine."""
    handmade_features: bool = False
    """Append the standardised hand-made statistics (mean and std of s' - s and of r) to the learned
    embedding, for variants unlike every training one (e.g. HalfCheetahCrippled's ood actuators)."""
    seed: int = 0
    """Run seed; every random draw of the run derives from it."""
    behaviour_run: Annotated[str | None, optional("PATH", "uniform random actions")] = None
    """Collect contexts with the policy of this run directory (e.g. a MAML run of the same family)
    instead of uniform random actions."""
    device: Annotated[str, device_choice()] = "auto"
    """Torch device: auto, cpu or cuda."""
    resume: bool = False
    """Continue the interrupted run in --out (same settings; --iterations may grow)."""
    no_progress: OffSwitch = False
    """Hide the progress bars."""
    allow_large: bool = False
    """Allow a training pool or episodes estimated above half of this machine's memory."""


def train_from_args(args: TrainProtoNetArgs) -> int:
    """Train from parsed flags (the method registry's ``train`` entry); returns the exit status."""
    if args.device not in DEVICE_CHOICES and not args.device.startswith("cuda:"):
        raise ValueError(f"--device must be one of {', '.join(DEVICE_CHOICES)}, got {args.device!r}")
    base = preset(args.preset, args.env)
    config = dataclasses.replace(
        base, way=args.way, shot=args.shot, query=args.query, context_size=args.context, seed=args.seed,
        iterations=base.iterations if args.iterations is None else args.iterations,
        train_variants=base.train_variants if args.train_variants is None else args.train_variants,
        learning_rate=base.learning_rate if args.learning_rate is None else args.learning_rate,
        handmade_features=args.handmade_features,
        envs_per_variant=max(base.envs_per_variant, args.shot + args.query),
    )
    # The encoder is small: intra-op threads only add contention with the envs.
    torch.set_num_threads(1)
    start = time.perf_counter()
    run_dir = train_run(config, args.out, args.device, args.resume, args.behaviour_run, not args.no_progress,
                        allow_large=args.allow_large)
    print(f"trained a ProtoNet encoder on {config.family} ({config.way}-way {config.shot}-shot, C = "
          f"{config.context_size}) for {config.iterations} iterations in {time.perf_counter() - start:.0f} s; "
          f"checkpoint: {run_dir.checkpoint_path}")
    print(f"evaluate with: metarl evaluate {run_dir.path} --split test")
    return 0
