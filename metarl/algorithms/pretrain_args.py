"""The flags of ``metarl train pretrain`` (:class:`TrainPretrainArgs`) and the run they ask for.

The run takes the MAML preset of the same name, so that a pretrain run and a MAML run
of one preset share the architecture, the training budget and, at evaluation, the
adaptation (inner lr, steps, episodes). See :mod:`metarl.algorithms.pretrain`.
:func:`run` is the method registry's ``train`` entry (:mod:`metarl.methods.pretrain`);
the command (``metarl.commands.train_pretrain``) only parses the flags.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import torch

import metarl_envs as envs
from metarl.algorithms.presets import PRESETS, MAMLRunConfig, maml_preset
from metarl.algorithms.pretrain import run_config_from_document, train_pretrain
from metarl.core.errors import UserError
from metarl.core.flags import OffSwitch, choice, device_choice, family_choice, optional
from metarl.core.policy import NONLINEARITIES
from metarl.storage.runs import RunDir


@dataclasses.dataclass(frozen=True)
class TrainPretrainArgs:
    """Train one policy on the mixture of train tasks with TRPO (no inner loop); adapt it like MAML later."""

    out: Path
    """Run directory (created; must be new or empty, or hold this run with --resume)."""
    env: Annotated[str | None, family_choice("required for a new run")] = None
    """Task family, one of the families listed by `metarl envs`."""
    preset: Annotated[str, choice(PRESETS)] = "fast"
    """MAML preset whose budget, architecture and adaptation settings to use: tiny, fast or paper."""
    seed: int = 0
    """Run seed: policy initialisation, training tasks, sampling noise."""
    device: Annotated[str, device_choice()] = "auto"
    """auto (CUDA if available), cpu or cuda."""
    resume: bool = False
    """Continue the run in --out from its last checkpoint (bit-exact on CPU)."""
    iterations: Annotated[int | None, optional("INT", "the preset's")] = None
    """Training iterations in total (with --resume: extend to this many)."""
    meta_batch_size: Annotated[int | None, optional("INT", "the preset's")] = None
    """Train tasks per iteration."""
    episodes_per_task: Annotated[int | None, optional("INT", "the preset's")] = None
    """MAML's episodes per task per batch; pretraining samples (inner_steps + 1) times as many per task."""
    horizon: Annotated[int | None, optional("INT", "the preset's")] = None
    """Episode length."""
    nonlinearity: Annotated[str | None, choice(NONLINEARITIES, "the preset's")] = None
    """The policy's hidden-layer nonlinearity."""
    threads: int = 1
    """CPU threads for torch (1 is fastest for these small networks)."""
    no_progress: OffSwitch = False
    """Hide the progress bar."""
    allow_large: bool = False
    """Allow a batch (tasks x episodes x horizon) estimated above half of this machine's memory."""


def resolve_run_config(args: TrainPretrainArgs) -> tuple[MAMLRunConfig, str | None, int]:
    """The run configuration, preset name and seed that ``args`` ask for (the stored ones with --resume)."""
    if args.preset not in PRESETS:
        raise UserError(f"unknown preset {args.preset!r}; available presets: {', '.join(PRESETS)}")
    run_dir = RunDir(args.out)
    if args.resume and run_dir.config_path.is_file():
        stored = run_dir.read_config()
        base, preset, seed = run_config_from_document(stored), stored.get("preset"), int(stored.get("seed", 0))
    else:
        if args.env is None:
            raise UserError(f"--env is required for a new run; available families: {', '.join(envs.FAMILIES)}")
        base, preset, seed = maml_preset(args.preset, args.env), args.preset, args.seed
    changes = {name: getattr(args, name)
               for name in ("iterations", "meta_batch_size", "episodes_per_task", "horizon", "nonlinearity")
               if getattr(args, name) is not None}
    return base.replace(**changes), preset, seed


def run(args: TrainPretrainArgs) -> int:
    """Train from parsed flags (the method registry's ``train`` entry); returns the exit status."""
    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    run_config, preset, seed = resolve_run_config(args)
    result = train_pretrain(run_config, args.out, seed=seed, device=args.device, preset=preset,
                            resume=args.resume, progress=not args.no_progress, allow_large=args.allow_large)
    print(f"pretrained on {run_config.family} for {run_config.iterations} iterations; "
          f"evaluate with `metarl evaluate {result.path}`")
    return 0
