"""The random-initialisation baseline: adapt a freshly initialised policy with gradient steps.

The MAML paper reports it beside MAML and the pretrained policy ("random",
Finn et al. 2017, Fig. 5): the same policy architecture, no training at all,
adapted on each unseen task with the same policy-gradient steps, learning
rates and sample budget as MAML at evaluation. It tells how much of MAML's
return after k steps is due to meta-learning and how much the k steps alone
would give.

A random-init *run directory* makes it a method like the others, so
``evaluate``, ``compare`` and ``render`` treat it the same way: ``config.json``
(``method: random_init``, the family, the policy block, the adaptation
hyperparameters) and a checkpoint holding the seeded initial weights
(``torch.manual_seed(seed)`` then the policy constructor, as ``metarl train
maml`` initialises, so a random-init run with a MAML run's seed and
architecture holds exactly that run's starting point).

Adaptation settings live under ``config["adaptation"]``: the fields of
:class:`metarl.algorithms.adaptation.AdaptationSettings` (``inner_lr``,
``inner_objective``, ``discount``, ``gae_lambda``, ``normalize_advantages``;
runs written before the last one was recorded adapt with it on); ``horizon`` at
the top level (None: the family's). Its evaluation is
:func:`metarl.methods.random_init.evaluate_random_init_run`.

``metarl train random-init`` (:class:`RandomInitArgs`, :func:`run`) writes such a run;
``--like RUN_DIR`` copies the family, architecture, adaptation settings, horizon and seed
of a MAML run, which makes it that run's starting point before meta-training.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import torch

import metarl_envs as envs
from metarl.algorithms.adaptation import AdaptationSettings
from metarl.core.errors import UserError
from metarl.core.flags import choice, family_choice, optional
from metarl.core.policy import (
    DEFAULT_NONLINEARITY,
    DEFAULT_WEIGHT_INIT,
    NONLINEARITIES,
    WEIGHT_INITS,
    GaussianMLPPolicy,
    check_nonlinearity,
    check_weight_init,
)
from metarl.core.rollout import env_dims
from metarl.core.validation import check_int, check_number, check_optional_int
from metarl.storage.checkpoint import save_checkpoint
from metarl.storage.runs import RunDir, policy_config, policy_tensors, writing_run

METHOD = "random_init"


@dataclasses.dataclass(frozen=True)
class RandomInitConfig:
    """A random-initialisation baseline run."""

    family: str
    """Task family (one of envs.FAMILIES)."""
    hidden_sizes: tuple[int, ...] = (100, 100)
    """Widths of the policy's hidden layers (MAML's: 100, 100)."""
    init_std: float = 1.0
    """Initial standard deviation of the Gaussian policy."""
    nonlinearity: str = DEFAULT_NONLINEARITY
    """The policy's hidden-layer nonlinearity: tanh or relu."""
    weight_init: str = DEFAULT_WEIGHT_INIT
    """The policy's initialisation: pytorch, xavier or xavier_small_out (metarl.core.policy.WEIGHT_INITS)."""
    inner_lr: float = 0.1
    """Learning rate of the first adaptation step (later steps use half, as for MAML)."""
    inner_objective: str = "vpg"
    """Policy-gradient objective of the adaptation steps: vpg or lvc."""
    discount: float = 0.99
    """Discount of the adaptation's returns."""
    gae_lambda: float = 1.0
    """GAE lambda of the adaptation's advantages."""
    normalize_advantages: bool = True
    """Centre and scale the adaptation's advantages per task (as the ``--like`` run trained)."""
    horizon: int | None = None
    """Episode length; None uses the family's registered horizon."""
    seed: int = 0
    """Seed of the initial weights."""

    def __post_init__(self) -> None:
        if self.family not in envs.FAMILIES:
            raise ValueError(
                f"family must be one of {', '.join(envs.FAMILIES)}, got {self.family!r}"
            )
        check_number("inner_lr", self.inner_lr, 0, low_open=True)
        check_number("init_std", self.init_std, 0, low_open=True)
        check_number("discount", self.discount, 0, 1)
        check_number("gae_lambda", self.gae_lambda, 0, 1)
        check_int("seed", self.seed, 0)
        check_nonlinearity(self.nonlinearity)
        check_weight_init(self.weight_init)
        if self.inner_objective not in ("vpg", "lvc"):
            raise ValueError(f"inner_objective must be vpg or lvc, got {self.inner_objective!r}")
        check_optional_int("horizon", self.horizon, 1)
        self.adaptation()  # the settings are valid together

    def adaptation(self) -> AdaptationSettings:
        """How the run adapts at evaluation (stored as ``config.json["adaptation"]``)."""
        return AdaptationSettings(
            inner_lr=self.inner_lr, inner_objective=self.inner_objective, discount=self.discount,
            gae_lambda=self.gae_lambda, normalize_advantages=self.normalize_advantages,
        )


def config_like(run_dir: str | os.PathLike[str], seed: int | None = None) -> RandomInitConfig:
    """The random-init counterpart of another run: same family, architecture and adaptation.

    Reads ``config.json`` of ``run_dir`` (a MAML run: its ``policy`` block, its adaptation
    settings (:meth:`~metarl.algorithms.adaptation.AdaptationSettings.from_config`, as
    ``metarl evaluate`` reads them) and ``horizon``); the seed defaults to that run's.
    """
    config = RunDir(run_dir).read_config()
    policy = config.get("policy")
    if not isinstance(policy, Mapping):
        raise ValueError(
            f"{run_dir}/config.json has no 'policy' block to copy the architecture from"
        )
    block = config.get("maml", config.get("adaptation"))
    if not isinstance(block, Mapping) or "inner_lr" not in block:
        raise ValueError(
            f"{run_dir}/config.json names no inner_lr (under 'maml' or 'adaptation') to copy; "
            "--like takes a MAML or random-init run"
        )
    adaptation = AdaptationSettings.from_config(config)
    return RandomInitConfig(
        family=config["family"],
        hidden_sizes=tuple(int(h) for h in policy["hidden_sizes"]),
        init_std=float(policy["init_std"]),
        nonlinearity=str(policy.get("nonlinearity", DEFAULT_NONLINEARITY)),
        weight_init=str(policy.get("weight_init", DEFAULT_WEIGHT_INIT)),
        **adaptation.keywords(),
        horizon=config.get("horizon"),
        seed=int(config.get("seed", 0)) if seed is None else seed,
    )


def create_run(out: str | os.PathLike[str], config: RandomInitConfig) -> RunDir:
    """Write a random-init run directory: ``config.json`` and the initial weights.

    Creating the same run again is allowed (the files are rewritten identically).

    Raises:
        metarl.storage.runs.RunDirError: ``out`` holds another run or unrelated files.
    """
    policy = initial_policy(config)
    document = run_document(config, policy)
    # the run is deterministic: recreating the same run is allowed and rewrites identical files
    with writing_run(out, document, resume=RunDir(out).config_path.is_file()) as run:
        run.write_config(document)
        metadata = {"method": METHOD, "family": config.family, "obs_dim": policy.obs_dim, "act_dim": policy.act_dim}
        save_checkpoint(run.checkpoint_path, policy_tensors(policy), metadata)
    return run


def initial_policy(config: RandomInitConfig) -> GaussianMLPPolicy:
    """The policy initialised from ``config.seed`` (the caller's global torch RNG is left untouched)."""
    obs_dim, act_dim = env_dims(config.family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return GaussianMLPPolicy(obs_dim, act_dim, config.hidden_sizes, config.init_std, config.nonlinearity,
                                 config.weight_init)


def run_document(config: RandomInitConfig, policy: GaussianMLPPolicy | None = None) -> dict[str, Any]:
    """The ``config.json`` of the random-init run of ``config``."""
    policy = initial_policy(config) if policy is None else policy
    return {
        "method": METHOD,
        "family": config.family,
        "seed": config.seed,
        "horizon": config.horizon,
        "policy": policy_config(policy, config.init_std),
        "adaptation": config.adaptation().keywords(),
    }


@dataclasses.dataclass(frozen=True)
class RandomInitArgs:
    """Create a random-initialisation baseline run (the seeded initial policy, adapted at evaluation)."""

    out: Path
    """Run directory to create (new or empty; the same run again is allowed)."""
    like: Annotated[Path | None, optional("PATH", "none")] = None
    """Copy family, architecture, adaptation settings (inner lr, objective, discount, GAE lambda, advantage
    normalisation), horizon and seed from this MAML run."""
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


def run(args: RandomInitArgs) -> int:
    """Train from parsed flags (the method registry's ``train`` entry); returns the exit status."""
    config = resolve_config(args)
    run_dir = create_run(args.out, config)
    print(
        f"random-init run of {config.family} (seed {config.seed}, hidden {list(config.hidden_sizes)}, "
        f"inner lr {config.inner_lr}) in {run_dir.path}; evaluate with `metarl evaluate {run_dir.path} --split test`"
    )
    return 0
