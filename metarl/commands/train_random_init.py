"""``metarl train random-init``: a run of the random-initialisation baseline (no training).

Writes a run directory holding the seeded initial policy and the adaptation
hyperparameters (see :mod:`metarl.algorithms.random_init`). ``metarl evaluate`` then adapts
it on unseen tasks with the same protocol as MAML, and ``compare``/``render``
take it like any other run. ``--like RUN_DIR`` copies the family, architecture,
inner learning rate, horizon and seed of a MAML run, which makes it that run's
starting point before meta-training.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

from metarl.algorithms.random_init import RandomInitConfig, config_like, create_run
from metarl.core.errors import UserError
from metarl.core.flags import choice, family_choice, optional, parse
from metarl.core.policy import NONLINEARITIES, WEIGHT_INITS


@dataclasses.dataclass(frozen=True)
class RandomInitArgs:
    """Create a random-initialisation baseline run (the seeded initial policy, adapted at evaluation)."""

    out: Path
    """Run directory to create (new or empty; the same run again is allowed)."""
    like: Annotated[Path | None, optional("PATH", "none")] = None
    """Copy family, architecture, inner lr, horizon and seed from this MAML run."""
    env: Annotated[str | None, family_choice("required without --like")] = None
    """Task family, one of those listed by `metarl envs`."""
    hidden_sizes: Annotated[tuple[int, ...] | None, optional("INT [INT ...]", "100 100, or --like's")] = None
    """Widths of the policy's hidden layers."""
    init_std: Annotated[float | None, optional("FLOAT", "1.0, or --like's")] = None
    """Initial standard deviation of the Gaussian policy."""
    nonlinearity: Annotated[str | None, choice(NONLINEARITIES, "tanh, or --like's")] = None
    """The policy's hidden-layer nonlinearity."""
    weight_init: Annotated[str | None, choice(WEIGHT_INITS, "pytorch, or --like's")] = None
    """The policy's initialisation (see `metarl train maml --help`)."""
    inner_lr: Annotated[float | None, optional("FLOAT", "0.1, or --like's")] = None
    """Learning rate of the first adaptation step."""
    horizon: Annotated[int | None, optional("INT", "the family's, or --like's")] = None
    """Episode length."""
    seed: Annotated[int | None, optional("INT", "0, or --like's")] = None
    """Seed of the initial weights."""


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
    return run(parse(RandomInitArgs, argv, prog="metarl train random-init"))


def run(args: RandomInitArgs) -> int:
    """Train from parsed flags (the method registry's ``train`` entry); returns the exit status."""
    config = resolve_config(args)
    run = create_run(args.out, config)
    print(
        f"random-init run of {config.family} (seed {config.seed}, hidden {list(config.hidden_sizes)}, "
        f"inner lr {config.inner_lr}) in {run.path}; evaluate with `metarl evaluate {run.path} --split test`"
    )
    return 0
