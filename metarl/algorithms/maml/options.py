"""The flags of ``metarl train maml``, derived from the config dataclasses instead of copied.

Every hyperparameter flag sets one field of :class:`~metarl.algorithms.presets.MAMLRunConfig`,
:class:`~metarl.algorithms.maml.config.MAMLConfig` or one of its outer-loop sections
(:class:`~metarl.algorithms.maml.config.TRPOConfig`, :class:`~metarl.algorithms.maml.config.ProMPConfig`);
its help text is that field's docstring and its metavar the field's type or choices
(:func:`metarl.core.flags.unset_flag`). An unset flag keeps the preset's value (or, with
``--resume``, the run's). :data:`RUN_FLAGS` and :data:`MAML_FLAGS` name those flags, in
the order ``--help`` lists them; the command's own flags (run directory, seed, device,
sampler, ...) are declared here as a plain flag dataclass.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

from metarl.algorithms.maml.config import OUTER_CONFIGS, MAMLConfig
from metarl.algorithms.presets import PRESETS, MAMLRunConfig
from metarl.cluster.backends import SAMPLER_BACKENDS
from metarl.core.flags import (
    OffSwitch,
    choice,
    device_choice,
    family_choice,
    flag_dataclass,
    optional,
    own_flags,
    unset_flag,
)

PRESET_VALUE = "the preset's"
"""What an unset hyperparameter flag means."""

RUN_FLAGS: tuple[str, ...] = (
    "iterations", "meta_batch_size", "episodes_per_task", "horizon", "hidden_sizes", "init_std",
    "nonlinearity", "weight_init", "checkpoint_every",
)
"""Flags that set :class:`MAMLRunConfig` fields of the same name."""
MAML_FLAGS: tuple[str, ...] = (
    "outer", "inner_steps", "inner_lr", "inner_objective", "first_order", "max_kl", "discount", "gae_lambda",
    "cg_iters", "cg_subsample", "normalize_advantages", "promp_steps", "promp_lr", "promp_clip_eps",
    "promp_kl_coef",
)
"""Flags that set :class:`MAMLConfig` fields, named by their flat ``config.json`` keys."""
_UNSET_NOTES = {"horizon": "the preset's, else the family's horizon"}


@dataclasses.dataclass(frozen=True)
class _RunFlags:
    """The command's own flags before the hyperparameters."""

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


@dataclasses.dataclass(frozen=True)
class _MachineFlags:
    """The command's own flags after the hyperparameters."""

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


def _maml_flag(key: str) -> tuple[str, Any, Any]:
    """The flag for the flat ``config.json`` key ``key`` of :class:`MAMLConfig`."""
    section, field = MAMLConfig.flat_keys()[key]
    owner = MAMLConfig if section is None else OUTER_CONFIGS[section]
    return unset_flag(owner, field, PRESET_VALUE, flag=key)


TrainMAMLArgs = flag_dataclass(
    "TrainMAMLArgs",
    """Meta-train a policy with MAML (Finn et al. 2017) on a task family.

    Unset hyperparameters come from the preset; with --resume they come from the
    run's config.json (only --iterations and --device may then change).
    """,
    [
        *own_flags(_RunFlags),
        *(unset_flag(MAMLRunConfig, name, _UNSET_NOTES.get(name, PRESET_VALUE)) for name in RUN_FLAGS),
        *(_maml_flag(key) for key in MAML_FLAGS),
        *own_flags(_MachineFlags),
    ],
    __name__,
)
"""The flags of ``metarl train maml`` (parse with :func:`metarl.core.flags.parse`)."""


def config_changes(args: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run-config and MAML (flat key) changes that the flags given in ``args`` ask for.

    Returns:
        ``(run_changes, maml_changes)`` for ``MAMLRunConfig.replace(maml=maml_changes, **run_changes)``.
    """
    run_changes = {name: getattr(args, name) for name in RUN_FLAGS if getattr(args, name) is not None}
    maml_changes = {key: getattr(args, key) for key in MAML_FLAGS if getattr(args, key) is not None}
    return run_changes, maml_changes
