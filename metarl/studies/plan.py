"""The runs of a study: which methods a study can run and the ``config.json`` each writes
(:func:`study_methods`, :meth:`RunPlan.expected_config`), the expansion into runs (:class:`RunPlan`)
and what the run directories on disk say about each run (:func:`run_state`): finished, resumable, or
a directory that holds another configuration (refused, never overwritten). The study file itself is
:mod:`metarl.studies.spec`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tyro

import metarl.methods as methods
from metarl.core.errors import UserError
from metarl.evaluation.results import stale_evaluation
from metarl.methods import Method
from metarl.storage.checkpoint import CheckpointError, load_checkpoint
from metarl.storage.runs import RunDir, RunDirError, check_run_dir

if TYPE_CHECKING:
    from metarl.studies.spec import EvaluationSpec

RUNS_DIR = "runs"


def _expected_maml_config(module: Any, args: Any) -> dict[str, Any]:
    run_config, preset, seed = module.resolve_run_config(args)
    return module.config_document(run_config, seed, args.device, preset)


def _expected_pretrain_config(module: Any, args: Any) -> dict[str, Any]:
    from metarl.algorithms.pretrain import config_document

    run_config, preset, seed = module.resolve_run_config(args)
    return config_document(run_config, seed, args.device, preset)


def _expected_finetune_config(module: Any, args: Any) -> dict[str, Any]:
    return args.to_config().to_config(args.device)


def _expected_random_init_config(module: Any, args: Any) -> dict[str, Any]:
    from metarl.algorithms.random_init import run_document

    return run_document(module.resolve_config(args))


# train word -> the config.json its training writes, from the parsed flags and their module
_EXPECTED_CONFIG: dict[str, Callable[[Any, Any], dict[str, Any]]] = {
    "maml": _expected_maml_config,
    "pretrain": _expected_pretrain_config,
    "finetune": _expected_finetune_config,
    "random-init": _expected_random_init_config,
}


def _finetune_resumable(config: Mapping[str, Any]) -> bool:
    from metarl.algorithms.finetune.registry import adapter

    return adapter(config["algo"]).resumable  # SAC: its replay buffer is not saved


# train word -> whether a partial run of this config.json continues with --resume (methods whose
# registry entry is resumable but not with every option)
_RESUMABLE: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "finetune": _finetune_resumable,
}


def study_methods() -> list[Method]:
    """The registered methods a study can run: those evaluated by returns whose ``config.json`` the
    study can predict (to check a run directory before resuming it)."""
    return [m for m in methods.methods() if m.kind == "returns" and m.train_word in _EXPECTED_CONFIG]


def study_method(train: str) -> Method:
    """The method of a study's ``train`` value (``metarl train <train>``; ``UserError`` naming the choices)."""
    for method in study_methods():
        if method.train_word == train:
            return method
    raise UserError(f"a study's train must be one of {', '.join(m.train_word for m in study_methods())}, "
                    f"got {train!r}")


def flag_names(method: Method) -> set[str]:
    """The flags of ``metarl train <word>`` (fields of ``Method.train_args``)."""
    return {field.name for field in dataclasses.fields(method.load("train_args"))}


def run_path(family: str, method: str, seed: int) -> str:
    """A run's directory relative to the study directory: ``runs/<family>/<method>/seed<seed>``."""
    return f"{RUNS_DIR}/{family}/{method}/seed{seed}"


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """One run of the grid: what to train and how to evaluate it (plain data, sent to Ray tasks)."""

    family: str
    method: str
    seed: int
    train: str
    options: tuple[str, ...]
    like: str | None
    evaluation: EvaluationSpec
    resumable: bool

    @property
    def key(self) -> str:
        return f"{self.family}/{self.method}/seed{self.seed}"

    @property
    def path(self) -> str:
        return run_path(self.family, self.method, self.seed)

    @property
    def like_key(self) -> str | None:
        """The key of the run this one is ``--like`` (None if none)."""
        return None if self.like is None else self.like.removeprefix(f"{RUNS_DIR}/")

    def train_argv(self, root: Path, resume: bool) -> list[str]:
        """``metarl train <train>`` flags for this run with the study directory at ``root``."""
        argv = ["--out", str(root / self.path), "--env", self.family, "--seed", str(self.seed)]
        if self.like is not None:
            argv += ["--like", str(root / self.like)]
        if resume:
            argv.append("--resume")
        return argv + list(self.options)

    def can_resume(self, root: Path) -> bool:
        """Whether a partial run of this plan continues with ``--resume`` (else it starts over):
        the method's registry entry, and for fine-tuning the algorithm (SAC cannot)."""
        if not self.resumable:
            return False
        check = _RESUMABLE.get(self.train)
        config = None if check is None else self.expected_config(root)
        return config is None or check(config)

    def expected_config(self, root: Path) -> dict[str, Any] | None:
        """The ``config.json`` this run's training writes (None while a ``like`` run has no config yet)."""
        if self.like is not None and not RunDir(root / self.like).config_path.is_file():
            return None
        method = study_method(self.train)
        args = tyro.cli(method.load("train_args"), args=self.train_argv(root, resume=False),
                        prog=f"metarl train {self.train}")
        # the module of the training function holds the method's resolve_run_config / resolve_config
        return _EXPECTED_CONFIG[self.train](importlib.import_module(method.train.split(":")[0]), args)


# ---------------------------------------------------------------------------------------------
# What the study directory says about a run
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunState:
    """What a run directory holds, measured against its plan."""

    started: bool
    """It has a ``config.json`` (training started; it agrees with the plan, or was refused)."""
    trained: bool
    """Training is complete (the checkpoint is at the planned iteration, or the weights exist)."""
    evaluated: tuple[str, ...]
    """Splits whose ``eval_<split>.json`` has the planned protocol and evaluated the run's checkpoint of now
    (:func:`metarl.evaluation.results.stale_evaluation`)."""

    def done(self, plan: RunPlan) -> bool:
        return self.trained and set(plan.evaluation.splits) <= set(self.evaluated)


def training_complete(run: RunDir, train: str, config: Mapping[str, Any]) -> bool:
    """Whether the run's training has finished (a complete checkpoint or weights file)."""
    if train == "finetune":
        from metarl.algorithms.finetune import checkpoint_path

        return checkpoint_path(run).is_file()
    if not run.checkpoint_path.is_file():
        return False
    if train == "random-init":
        return True
    try:
        _, metadata = load_checkpoint(run.checkpoint_path)
    except CheckpointError:
        return False  # a damaged checkpoint: --resume will say so
    return int(metadata.get("iteration", -1)) >= int(config["iterations"])


def run_state(root: Path, plan: RunPlan) -> RunState:
    """Check the run directory of ``plan`` under the study directory ``root``; write nothing.

    Raises:
        RunDirError: the directory holds a run of another configuration (or
            another protocol's evaluation): it is refused, not overwritten.
    """
    run = RunDir(root / plan.path)
    if not run.config_path.is_file():
        if run.path.is_dir() and any(not entry.name.startswith(".") for entry in run.path.iterdir()):
            raise RunDirError(f"{run.path} is not empty and holds no metarl run (no config.json); "
                              "move its files away or choose another study directory")
        return RunState(False, False, ())
    expected = plan.expected_config(root)
    if expected is None:  # a random-init run whose like run is gone: nothing to check it against
        raise RunDirError(f"{run.path} holds a run but {root / plan.like} (its --like run) holds none")
    try:
        check_run_dir(run.path, expected, resume=True)
    except RunDirError as error:
        raise RunDirError(f"run {plan.key} of the study does not match its directory: {error}") from None
    trained = training_complete(run, plan.train, expected)
    evaluated = []
    for split in plan.evaluation.splits:
        path = run.eval_path(split)
        if not path.is_file():
            continue
        document = json.loads(path.read_text())
        if not plan.evaluation.matches(document):
            raise RunDirError(
                f"{path} was written with another evaluation protocol than the study's ({plan.evaluation}); "
                "move it away to re-evaluate, or run the study with that protocol"
            )
        if stale_evaluation(run.path, split) is None:  # not of a shorter training than the checkpoint's
            evaluated.append(split)
    return RunState(True, trained, tuple(evaluated))
