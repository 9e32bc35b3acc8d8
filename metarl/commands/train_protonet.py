"""``metarl train protonet``: train a ProtoNet task-identification encoder on a family's train split.

The run directory gets ``config.json`` (method ``protonet``, every
hyperparameter and the behaviour that collects contexts), ``metrics.csv`` +
TensorBoard events (``train/loss``, ``train/accuracy``) and
``checkpoint/latest.safetensors`` (+ ``latest.json``). Evaluate it with
``metarl evaluate RUN_DIR --split test|ood``; use it online through
``metarl.TaskIdentifier.load(RUN_DIR)``. See :mod:`metarl.identification.trainer`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Annotated

import torch
import tyro

from metarl.core.device import DEVICE_CHOICES
from metarl.core.flags import OffSwitch, choice, device_choice, family_choice, optional, parse
from metarl.identification.config import preset
from metarl.identification.run import train_run


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


def main(argv: list[str]) -> int:
    return run(parse(TrainProtoNetArgs, argv, prog="metarl train protonet"))


def run(args: TrainProtoNetArgs) -> int:
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
    run = train_run(config, args.out, args.device, args.resume, args.behaviour_run, not args.no_progress,
                    allow_large=args.allow_large)
    print(f"trained a ProtoNet encoder on {config.family} ({config.way}-way {config.shot}-shot, C = "
          f"{config.context_size}) for {config.iterations} iterations in {time.perf_counter() - start:.0f} s; "
          f"checkpoint: {run.checkpoint_path}")
    print(f"evaluate with: metarl evaluate {run.path} --split test")
    return 0
