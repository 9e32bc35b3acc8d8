"""The flags of ``metarl train maml`` (:class:`TrainMAMLArgs`) and the run they ask for.

:func:`resolve_run_config` turns the flags into a :class:`~metarl.algorithms.presets.MAMLRunConfig`
(the preset's, or with ``--resume`` the stored run's, with the flags given on top), whose
``config.json`` is :func:`~metarl.algorithms.maml.training.config_document` (also here, so the
module of the flags answers both, as the studies ask it);
:func:`run` trains from parsed flags (the method registry's ``train`` entry,
:mod:`metarl.methods.maml`); the command itself only parses them
(``metarl.commands.train_maml``).
"""

from __future__ import annotations

import torch

import metarl_envs as envs
from metarl.algorithms.maml.options import TrainMAMLArgs, config_changes
from metarl.algorithms.maml.training import config_document, run_config_from_document, train_maml
from metarl.algorithms.presets import PRESETS, MAMLRunConfig, maml_preset
from metarl.cluster.backends import SAMPLER_BACKENDS, SamplerChoice
from metarl.core.device import DEVICE_CHOICES
from metarl.core.errors import UserError
from metarl.storage.runs import RunDir

__all__ = ["TrainMAMLArgs", "config_document", "resolve_run_config", "run"]


def resolve_run_config(args: TrainMAMLArgs) -> tuple[MAMLRunConfig, str, int]:
    """The run configuration, preset name and seed that ``args`` ask for."""
    if args.device not in DEVICE_CHOICES:
        raise UserError(f"--device must be one of {', '.join(DEVICE_CHOICES)}, got {args.device!r}")
    if args.preset is not None and args.preset not in PRESETS:
        raise UserError(f"unknown preset {args.preset!r}; available presets: {', '.join(PRESETS)}")
    stored = None
    run_dir = RunDir(args.out)
    if args.resume and run_dir.config_path.exists():
        stored = run_dir.read_config()
    if stored is not None and args.env in (None, stored["family"]) and args.preset in (None, stored.get("preset")):
        base, preset, seed = run_config_from_document(stored), stored.get("preset"), stored.get("seed", 0)
    else:
        if args.env is None:
            raise UserError(f"--env is required for a new run; available families: {', '.join(envs.FAMILIES)}")
        preset = args.preset or "fast"
        base, seed = maml_preset(preset, args.env), 0
        if stored is not None:
            seed = stored.get("seed", 0)
    seed = seed if args.seed is None else args.seed
    run_changes, maml_changes = config_changes(args)
    return base.replace(maml=maml_changes, **run_changes), preset, seed


def run(args: TrainMAMLArgs) -> int:
    """Train from parsed flags (the method registry's ``train`` entry); returns the exit status."""
    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.sampler not in SAMPLER_BACKENDS:
        raise UserError(f"--sampler must be one of {', '.join(SAMPLER_BACKENDS)}, got {args.sampler!r}")
    if args.sampler == "local" and (args.workers != 1 or args.ray_address is not None):
        raise UserError("--workers and --ray-address apply to --sampler ray only")
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    run_config, preset, seed = resolve_run_config(args)
    result = train_maml(
        run_config, args.out, seed=seed, device=args.device, preset=preset, resume=args.resume,
        progress=not args.no_progress, tensorboard=not args.no_tensorboard,
        sampler=SamplerChoice(args.sampler, args.workers, args.ray_address), allow_large=args.allow_large,
    )
    last = result.history[-1] if result.history else {}
    k = run_config.maml.inner_steps
    if last:
        print(
            f"trained {result.iterations} iterations of MAML on {run_config.family} in {result.seconds:.1f} s; "
            f"last meta-batch: return {last['adapt/return_k0']:.1f} before, {last[f'adapt/return_k{k}']:.1f} "
            f"after {k} inner step(s)"
        )
    print(f"run directory: {result.run_dir.path} (evaluate with `metarl evaluate {result.run_dir.path}`)")
    return 0
