"""``metarl train random-init``: a run of the random-initialisation baseline (no training).

Writes a run directory holding the seeded initial policy and the adaptation
hyperparameters (see :mod:`metarl.random_init`). ``metarl evaluate`` then adapts
it on unseen tasks with the same protocol as MAML, and ``compare``/``render``
take it like any other run. ``--like RUN_DIR`` copies the family, architecture,
inner learning rate, horizon and seed of a MAML run, which makes it that run's
starting point before meta-training.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tyro

from metarl.cli import UserError
from metarl.random_init import RandomInitConfig, config_like, create_run


@dataclasses.dataclass(frozen=True)
class RandomInitArgs:
    """Create a random-initialisation baseline run (the seeded initial policy, adapted at evaluation)."""

    out: Path
    """Run directory to create (new or empty; the same run again is allowed)."""
    like: Path | None = None
    """Copy family, architecture, inner lr, horizon and seed from this MAML run."""
    env: str | None = None
    """Task family (required without --like), one of those listed by `metarl envs`."""
    hidden_sizes: tuple[int, ...] | None = None
    """Widths of the policy's hidden layers (default 100 100, or --like's)."""
    init_std: float | None = None
    """Initial standard deviation of the Gaussian policy (default 1.0, or --like's)."""
    nonlinearity: str | None = None
    """The policy's hidden-layer nonlinearity, tanh or relu (default tanh, or --like's)."""
    weight_init: str | None = None
    """The policy's initialisation, pytorch, xavier or xavier_small_out (default pytorch, or --like's)."""
    inner_lr: float | None = None
    """Learning rate of the first adaptation step (default 0.1, or --like's)."""
    horizon: int | None = None
    """Episode length (default: the family's, or --like's)."""
    seed: int | None = None
    """Seed of the initial weights (default 0, or --like's)."""


def resolve_config(args: RandomInitArgs) -> RandomInitConfig:
    """The run configuration ``args`` ask for (``--like``'s, with the flags given on top)."""
    if args.like is not None:
        base = config_like(args.like)
        if args.env is not None and args.env != base.family:
            raise UserError(f"--env {args.env} differs from the family of --like ({base.family})")
    elif args.env is None:
        raise UserError("give --env FAMILY (see `metarl envs`) or --like RUN_DIR")
    else:
        base = RandomInitConfig(family=args.env)
    overrides = {
        name: getattr(args, name)
        for name in ("hidden_sizes", "init_std", "nonlinearity", "weight_init", "inner_lr", "horizon", "seed")
        if getattr(args, name) is not None
    }
    return dataclasses.replace(base, **overrides)


def main(argv: list[str]) -> int:
    args = tyro.cli(RandomInitArgs, args=argv, prog="metarl train random-init")
    config = resolve_config(args)
    run = create_run(args.out, config)
    print(
        f"random-init run of {config.family} (seed {config.seed}, hidden {list(config.hidden_sizes)}, "
        f"inner lr {config.inner_lr}) in {run.path}; evaluate with `metarl evaluate {run.path} --split test`"
    )
    return 0
