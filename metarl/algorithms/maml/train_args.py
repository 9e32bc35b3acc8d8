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

import dataclasses
from pathlib import Path
from typing import Annotated

import torch

import metarl_envs as envs
from metarl.algorithms.adaptation import OBJECTIVES
from metarl.algorithms.maml.learner import OUTER_ALGORITHMS, MAMLConfig
from metarl.algorithms.maml.training import config_document, run_config_from_document, train_maml
from metarl.algorithms.presets import PRESETS, MAMLRunConfig, maml_preset
from metarl.cluster.backends import SAMPLER_BACKENDS, SamplerChoice
from metarl.core.device import DEVICE_CHOICES
from metarl.core.errors import UserError
from metarl.core.flags import OffSwitch, choice, device_choice, family_choice, optional
from metarl.core.policy import NONLINEARITIES, WEIGHT_INITS
from metarl.storage.runs import RunDir

__all__ = ["TrainMAMLArgs", "config_document", "resolve_run_config", "run"]

_PRESET = "the preset's"


@dataclasses.dataclass(frozen=True)
class TrainMAMLArgs:
    """Meta-train a policy with MAML (Finn et al. 2017) on a task family.

    Unset hyperparameters come from the preset; with --resume they come from the
    run's config.json (only --iterations and --device may then change).
    """

    out: Path
    """Run directory (created; must be new or empty, or hold this run with --resume)."""
    env: Annotated[str | None, family_choice("required for a new run")] = None
    """Task family, one of the families listed by `metarl envs`."""
    preset: Annotated[str | None, choice(PRESETS, "fast")] = None
    """Named configuration: tiny (CI, seconds), fast (minutes) or paper (the MAML paper's)."""
    seed: Annotated[int | None, optional("INT", "0")] = None
    """Run seed: policy initialisation, training tasks, sampling noise."""
    device: Annotated[str, device_choice()] = "auto"
    """auto (CUDA if available), cpu or cuda."""
    resume: bool = False
    """Continue the run in --out from its last checkpoint (bit-exact on CPU)."""
    iterations: Annotated[int | None, optional("INT", _PRESET)] = None
    """Meta-iterations in total (with --resume: extend the run to this many)."""
    meta_batch_size: Annotated[int | None, optional("INT", _PRESET)] = None
    """Tasks per meta-batch."""
    episodes_per_task: Annotated[int | None, optional("INT", _PRESET)] = None
    """Episodes per task for each inner step and for the query."""
    horizon: Annotated[int | None, optional("INT", "the preset's, else the family's horizon")] = None
    """Episode length."""
    hidden_sizes: Annotated[tuple[int, ...] | None, optional("INT [INT ...]", _PRESET)] = None
    """Widths of the policy's hidden layers, e.g. --hidden-sizes 100 100."""
    init_std: Annotated[float | None, optional("FLOAT", _PRESET)] = None
    """Initial standard deviation of the Gaussian policy."""
    nonlinearity: Annotated[str | None, choice(NONLINEARITIES, _PRESET)] = None
    """The policy's hidden-layer nonlinearity: tanh, or relu (the MAML paper's code)."""
    weight_init: Annotated[str | None, choice(WEIGHT_INITS, _PRESET)] = None
    """The policy's initialisation: pytorch (nn.Linear's default), xavier (Xavier-uniform weights,
    zero biases, as rllab's MAML policies) or xavier_small_out (xavier with the output weights x 0.01:
    the initial mean is near 0 everywhere)."""
    checkpoint_every: Annotated[int | None, optional("INT", _PRESET)] = None
    """Save a checkpoint every this many iterations (and at the end)."""
    outer: Annotated[str | None, choice(OUTER_ALGORITHMS, _PRESET)] = None
    """Outer loop: trpo (trust region through the adaptation) or promp (clipped ratio, Adam)."""
    inner_steps: Annotated[int | None, optional("INT", _PRESET)] = None
    """Inner policy-gradient steps per task."""
    inner_lr: Annotated[float | None, optional("FLOAT", _PRESET)] = None
    """Inner learning rate alpha (> 0)."""
    inner_objective: Annotated[str | None, choice(OBJECTIVES, _PRESET)] = None
    """Inner objective: vpg (MAML paper) or lvc (ProMP's low-variance curvature)."""
    first_order: Annotated[bool | None, choice(("True", "False"), _PRESET)] = None
    """Drop the second-order terms of the meta-gradient (first-order MAML)."""
    max_kl: Annotated[float | None, optional("FLOAT", _PRESET)] = None
    """TRPO trust-region size (KL bound delta)."""
    discount: Annotated[float | None, optional("FLOAT", _PRESET)] = None
    """Discount factor gamma in [0, 1]."""
    gae_lambda: Annotated[float | None, optional("FLOAT", _PRESET)] = None
    """GAE lambda in [0, 1] (1.0: Monte-Carlo returns minus the linear baseline)."""
    cg_iters: Annotated[int | None, optional("INT", _PRESET)] = None
    """TRPO conjugate-gradient iterations."""
    cg_subsample: Annotated[float | None, optional("FLOAT", _PRESET)] = None
    """TRPO: fraction of the meta-batch's tasks whose KL curvature the conjugate gradient uses, in (0, 1]
    (1: exact; the gradient and the line search always use every task)."""
    normalize_advantages: Annotated[bool | None, choice(("True", "False"), _PRESET)] = None
    """Centre and scale advantages per task (rllab's center_adv), in the inner steps, the outer loss and
    at evaluation."""
    promp_steps: Annotated[int | None, optional("INT", _PRESET)] = None
    """ProMP: Adam steps per meta-batch."""
    promp_lr: Annotated[float | None, optional("FLOAT", _PRESET)] = None
    """ProMP: Adam learning rate."""
    promp_clip_eps: Annotated[float | None, optional("FLOAT", _PRESET)] = None
    """ProMP: likelihood-ratio clipping epsilon."""
    promp_kl_coef: Annotated[float | None, optional("FLOAT", _PRESET)] = None
    """ProMP: weight of the KL penalty on the inner step."""
    sampler: Annotated[str, choice(SAMPLER_BACKENDS)] = "local"
    """Where episodes are collected: local (this process) or ray (actors, each stepping a block of the
    meta-batch's tasks; needs pip install -e '.[ray]'). Same episodes either way; may change on --resume."""
    workers: int = 1
    """Ray actors with --sampler ray."""
    ray_address: Annotated[str | None, optional("HOST:PORT", "start Ray on this machine")] = None
    """With --sampler ray: the address of an existing Ray cluster."""
    threads: int = 1
    """CPU threads for torch (1 is fastest for these small networks on a shared machine; not part of
    the run's config, but bit-exact resume needs the same value)."""
    no_progress: OffSwitch = False
    """Hide the progress bar."""
    no_tensorboard: OffSwitch = False
    """Do not write TensorBoard events."""
    allow_large: bool = False
    """Allow a meta-batch (tasks x episodes x horizon) estimated above half of this machine's memory."""


_MAML_FLAGS = (
    "outer", "inner_steps", "inner_lr", "inner_objective", "first_order", "max_kl", "discount", "gae_lambda",
    "cg_iters", "cg_subsample", "normalize_advantages", "promp_steps", "promp_lr", "promp_clip_eps",
    "promp_kl_coef",
)
_RUN_FLAGS = ("iterations", "meta_batch_size", "episodes_per_task", "horizon", "hidden_sizes", "init_std",
              "nonlinearity", "weight_init", "checkpoint_every")


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
    maml_fields = {f.name for f in dataclasses.fields(MAMLConfig)}
    maml_changes = {
        name: getattr(args, name) for name in _MAML_FLAGS if getattr(args, name) is not None and name in maml_fields
    }
    unsupported = [name for name in _MAML_FLAGS if getattr(args, name) is not None and name not in maml_fields]
    if unsupported:
        raise UserError(f"MAMLConfig has no field(s) {unsupported}; remove those flags")
    run_changes = {name: getattr(args, name) for name in _RUN_FLAGS if getattr(args, name) is not None}
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
