"""The numbers of evaluated runs, read from their ``eval_<split>.json``, for comparison tables.

:func:`load_run_result` reads one run's evaluation document through
:mod:`metarl.evaluation.document` into a :class:`RunResult`; documents written
before the schema had a version (version 1) record no horizon, which is then
taken from the run's ``config.json`` (the horizon ``metarl evaluate`` sampled:
``config["horizon"]``, else the family's). Intervals come from the documents
(``returns.mean_ci95``); a document that lacks them (written before that key
existed) gets them recomputed from its per-task returns with
:func:`metarl.evaluation.stats.summarize`.

With :func:`group_by_seed` and :func:`pooled_result`, runs that differ only in
their training seed (the same ``config.json`` apart from ``seed`` and
``device``, evaluated on the same tasks with the same protocol) are pooled into
one row: the mean and IQM over seeds and tasks, with rliable's stratified
bootstrap over both for the interval (docs/design.md, "Evaluation protocol"), so
a claim rests on every seed trained and not on one. :func:`reference_results`
turns published curves (the MAML paper's, ``{method: [k0, k1, ...]}``) into rows.
:func:`stale_evaluation` tells whether a run was trained further after it was evaluated.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import metarl_envs as envs
from metarl.evaluation.document import (
    ReturnsDocument,
    ReturnsProtocol,
    WrongKindError,
    read_eval_document,
)
from metarl.evaluation.stats import summarize

__all__ = [
    "RunResult",
    "group_by_seed",
    "load_run_result",
    "pooled_result",
    "read_returns_document",
    "record_evaluated_checkpoint",
    "reference_results",
    "stale_evaluation",
]

SPLITS: tuple[str, ...] = ("test", "ood")


@dataclasses.dataclass(frozen=True)
class RunResult:
    """The numbers of one evaluated run (or of a reference curve) used by the comparison.

    Attributes:
        label: Row name (the run directory name, or e.g. ``paper maml``).
        method: ``config.json["method"]`` of the run.
        family: Task family.
        split: Evaluation split.
        mean: Mean return per k, ``[K]``.
        mean_ci95: 95% interval of the mean per k, ``[K, 2]`` (NaN for references).
        iqm: Interquartile mean per k, ``[K]`` (NaN for references).
        iqm_ci95: 95% interval of the IQM per k, ``[K, 2]``.
        samples_per_step: Env steps per adaptation step (all tasks together).
        num_tasks: Number of evaluation tasks.
        adapt_seconds: Wall time of the adaptation (None if unknown).
        params: Parameter count (None if unknown).
        flops_per_forward: FLOPs of one policy forward (None if unknown).
        source: Where the numbers came from (a file path or a citation).
        seeds: Training seeds pooled in this row (1 for a single run or a reference).
        protocol: How the run was evaluated (None for a reference curve).
        returns: The per-task returns behind the row, ``[runs, tasks, K]`` (None for a reference curve).
    """

    label: str
    method: str
    family: str
    split: str
    mean: np.ndarray
    mean_ci95: np.ndarray
    iqm: np.ndarray
    iqm_ci95: np.ndarray
    samples_per_step: int | None
    num_tasks: int | None
    adapt_seconds: float | None
    params: int | None
    flops_per_forward: int | None
    source: str
    seeds: int = 1
    protocol: ReturnsProtocol | None = None
    returns: np.ndarray | None = None

    @property
    def num_k(self) -> int:
        """Number of k values (adaptation steps + 1)."""
        return int(self.mean.shape[0])

    @property
    def samples(self) -> np.ndarray | None:
        """Adaptation samples used before each k's return, ``[K]`` (None if unknown)."""
        if self.samples_per_step is None:
            return None
        return np.arange(self.num_k, dtype=np.float64) * self.samples_per_step

    @property
    def area_under_curve(self) -> float:
        """Average return over the adaptation budget (trapezoid over samples, / budget)."""
        if self.num_k == 1:
            return float(self.mean[0])
        # samples per step are equal, so the normalised trapezoid is the same over k
        trapezoid = self.mean[0] / 2 + self.mean[1:-1].sum() + self.mean[-1] / 2
        return float(trapezoid / (self.num_k - 1))

def _eval_path(run_dir: Path, split: str, eval_file: str | None) -> tuple[Path, str]:
    """The evaluation document to read in ``run_dir``, and what to do if it is missing.

    ``eval_file`` names another file of the run directory than ``eval_<split>.json``
    (e.g. ``eval_test_sample_budget.json`` or ``eval_custom.json``).
    """
    if eval_file is None:
        return (
            run_dir / f"eval_{split}.json",
            f"run `metarl evaluate {run_dir} --split {split}` first",
        )
    if Path(eval_file).name != eval_file or not eval_file.endswith(".json"):
        raise ValueError(
            f"--eval-file must be a .json file name inside each run directory, got {eval_file!r}"
        )
    return run_dir / eval_file, "it is written by `metarl evaluate` (or scripts/reproduce_maml.py)"



def _read_config(directory: Path) -> dict[str, Any] | None:
    """The run's ``config.json``, or None if it has none (or it is not a JSON object)."""
    path = directory / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    return config if isinstance(config, dict) else None


def _version1_horizon(document: ReturnsDocument, config: Mapping[str, Any] | None) -> ReturnsDocument:
    """A version-1 document (no ``horizon``) with the horizon its evaluation sampled, from ``config.json``:
    ``config["horizon"]`` or, when None or absent, the family's registered one (as ``metarl evaluate``)."""
    if document.protocol.horizon is not None or config is None:
        return document
    horizon = config.get("horizon")
    if horizon is None:
        try:
            horizon = envs.family_spec(document.protocol.family).horizon
        except (KeyError, ValueError):  # a family not registered here: the horizon stays unknown
            return document
    return dataclasses.replace(document, protocol=dataclasses.replace(document.protocol, horizon=int(horizon)))


def read_returns_document(directory: Path, path: Path, missing_hint: str) -> ReturnsDocument:
    """The returns document in ``path`` of the run in ``directory`` (version 1: horizon from its config).

    Raises:
        FileNotFoundError: no such file (the message ends with ``missing_hint``).
        ValueError: not a returns document (a ProtoNet run's accuracy), or a malformed one.
    """
    try:
        document = read_eval_document(path, missing_hint, expect="returns")
    except WrongKindError:
        raise ValueError(
            f"{path} holds task-identification accuracy (a ProtoNet run); compare takes runs "
            "evaluated by return (maml, pretrain, finetune, random_init)"
        ) from None
    assert isinstance(document, ReturnsDocument)
    return _version1_horizon(document, _read_config(directory))


def stale_evaluation(run_dir: str | os.PathLike[str], split: str, eval_file: str | None = None) -> str | None:
    """Why the run's evaluation on ``split`` (a returns document) no longer describes its policy, or None
    if it does (or cannot be told).

    A document records the training iteration and environment steps of the checkpoint it evaluated
    (``trained_iteration``, ``trained_env_steps``); if the checkpoint holds others now, the run was
    trained further (or again) since. A document written before those fields were recorded is stale
    when the checkpoint is short of the iterations its ``config.json`` now asks for: the run's training
    was extended after it was evaluated and has not finished.
    """
    from metarl.storage.runs import RunDir, checkpoint_progress

    directory = Path(run_dir)
    path, missing_hint = _eval_path(directory, split, eval_file)
    document = read_eval_document(path, missing_hint)
    if not isinstance(document, ReturnsDocument):  # an identification accuracy records no checkpoint
        return None
    progress = checkpoint_progress(RunDir(directory))
    if progress is None:  # no checkpoint (removed to save space, say) or a damaged one: nothing to compare with
        return None
    iteration, env_steps = progress
    recorded = (document.trained_iteration, document.trained_env_steps)
    if recorded != (None, None):
        if recorded == (iteration, env_steps):
            return None
        def point(at: int | None, steps: int | None) -> str:
            return f"iteration {at}" + ("" if steps is None else f" ({steps:,} env steps)")

        return (f"{path.name} evaluated the checkpoint of {point(*recorded)}; the run's checkpoint is at "
                f"{point(iteration, env_steps)} now")
    planned = (_read_config(directory) or {}).get("iterations")
    if iteration is not None and isinstance(planned, int) and iteration < planned:
        return (f"{path.name} predates the extension of its training to {planned} iterations (the checkpoint is at "
                f"iteration {iteration})")
    return None


def record_evaluated_checkpoint(run_dir: str | os.PathLike[str]) -> list[str]:
    """Record in each of the run's ``eval_<split>.json`` (returns documents, every split) the iteration and
    environment steps of its checkpoint, where the document does not record them and is not stale
    (:func:`stale_evaluation`), so it did evaluate that checkpoint. Called before a finished run's
    training is extended, so that its documents then read as stale until it is evaluated again.
    Returns the splits whose document was rewritten (none if the checkpoint cannot be read)."""
    from metarl.evaluation.document import write_eval_json
    from metarl.storage.runs import RunDir, checkpoint_progress

    directory = Path(run_dir)
    progress = checkpoint_progress(RunDir(directory))
    if progress is None or progress == (None, None):  # a damaged checkpoint is left to `train --resume`
        return []
    iteration, env_steps = progress
    rewritten = []
    for split in SPLITS:
        path = directory / f"eval_{split}.json"
        if not path.is_file():
            continue
        document = read_eval_document(path, "")
        if not isinstance(document, ReturnsDocument):
            continue
        if (document.trained_iteration, document.trained_env_steps) != (None, None):
            continue
        if stale_evaluation(directory, split) is not None:
            continue
        write_eval_json(directory, dataclasses.replace(document, trained_iteration=iteration,
                                                       trained_env_steps=env_steps))
        rewritten.append(split)
    return rewritten


def load_run_result(
    run_dir: str | os.PathLike[str],
    split: str,
    label: str | None = None,
    eval_file: str | None = None,
) -> RunResult:
    """Read ``RUN_DIR/eval_<split>.json`` into a :class:`RunResult`.

    Raises:
        ValueError: unknown split, a document that is not a returns document
            (e.g. ProtoNet's accuracy), or a malformed one.
        FileNotFoundError: the run directory or its eval file does not exist
            (the message says which ``metarl evaluate`` command makes it).
    """
    if split not in SPLITS:
        raise ValueError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    directory = Path(run_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"run directory {str(directory)!r} does not exist")
    path, missing_hint = _eval_path(directory, split, eval_file)
    document = read_returns_document(directory, path, missing_hint)
    returns = document.returns
    mean = np.asarray(returns.mean, dtype=np.float64)  # [K]
    iqm = np.asarray(returns.iqm if returns.iqm is not None else [math.nan] * mean.size, dtype=np.float64)  # [K]
    iqm_ci = np.asarray(returns.ci95 if returns.ci95 is not None else [[math.nan, math.nan]] * mean.size,
                        dtype=np.float64)  # [K, 2]
    per_task = np.asarray([row.returns for row in document.per_task], dtype=np.float64)  # [tasks, K]
    if returns.mean_ci95 is not None:
        mean_ci = np.asarray(returns.mean_ci95, dtype=np.float64)  # [K, 2]
    else:
        summary = summarize(per_task, seed=document.protocol.eval_seed or 0)
        mean_ci = np.asarray(summary["mean_ci95"], dtype=np.float64)
    return RunResult(
        label=label or directory.resolve().name,
        method=document.method,
        family=document.protocol.family,
        split=document.protocol.split,
        mean=mean,
        mean_ci95=mean_ci.reshape(mean.size, 2),
        iqm=iqm,
        iqm_ci95=iqm_ci.reshape(mean.size, 2),
        samples_per_step=document.samples_per_step,
        num_tasks=document.protocol.num_tasks,
        adapt_seconds=document.adapt_seconds,
        params=document.params,
        flops_per_forward=document.flops_per_forward,
        source=str(path),
        protocol=document.protocol,
        returns=per_task[None] if per_task.ndim == 2 and per_task.shape[-1] == mean.size else None,
    )


#: ``config.json`` keys in which the seeds of one pooled group may differ.
SEED_CONFIG_KEYS: tuple[str, ...] = ("seed", "device", "sampler")

_CONFIG_HINT = "pooling seeds needs each run's config.json (written by metarl train)"


@dataclasses.dataclass(frozen=True)
class _SeedRun:
    """A run's ``config.json`` and evaluation document, read once for pooling."""

    directory: Path
    config: dict[str, Any]
    document: ReturnsDocument

    @property
    def group_key(self) -> str:
        """What runs pooled as seeds of one configuration must share, as a canonical string:
        the config apart from :data:`SEED_CONFIG_KEYS`, the method, the protocol and the tasks in order."""
        shared_config = {k: v for k, v in self.config.items() if k not in SEED_CONFIG_KEYS}
        protocol = dataclasses.asdict(self.document.protocol)
        tasks = [dict(row.task) for row in self.document.per_task]
        return json.dumps([shared_config, self.document.method, protocol, tasks], sort_keys=True)


def _read_seed_run(run_dir: str | os.PathLike[str], split: str, eval_file: str | None) -> _SeedRun:
    directory = Path(run_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"run directory {str(directory)!r} does not exist")
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory / 'config.json'} does not exist; {_CONFIG_HINT}")
    config = _read_config(directory)
    if config is None:
        raise ValueError(f"{directory / 'config.json'} must hold a JSON object")
    path, missing_hint = _eval_path(directory, split, eval_file)
    return _SeedRun(directory, config, read_returns_document(directory, path, missing_hint))


def group_by_seed(
    run_dirs: Sequence[str | os.PathLike[str]], split: str, eval_file: str | None = None
) -> list[list[Path]]:
    """Partition runs into groups that differ only in their training seed.

    Runs fall in one group when their ``config.json`` agree apart from
    :data:`SEED_CONFIG_KEYS` and their evaluations share the method, the protocol
    (:class:`metarl.evaluation.document.ReturnsProtocol`) and the tasks, in order.
    Groups keep the order in which their first run was given.

    Raises:
        FileNotFoundError: a run lacks ``config.json`` or its evaluation.
        ValueError: one of them is not a JSON object, or not a returns document.
    """
    groups: dict[str, list[Path]] = {}
    for run_dir in run_dirs:
        run = _read_seed_run(run_dir, split, eval_file)
        groups.setdefault(run.group_key, []).append(run.directory)
    return list(groups.values())


def pooled_result(
    run_dirs: Sequence[str | os.PathLike[str]], split: str, eval_file: str | None = None
) -> RunResult:
    """One row for several seeds of one configuration (see :func:`group_by_seed`).

    The mean and IQM are over seeds and tasks; their 95% intervals come from
    :func:`metarl.evaluation.stats.summarize` on the ``[seeds, tasks, K]`` returns
    (rliable's bootstrap over seeds and tasks). Samples per step and
    adaptation time are averaged over the seeds.

    Raises:
        ValueError: the runs differ in more than their seed, or a document is malformed.
    """
    singles = [load_run_result(run_dir, split, eval_file=eval_file) for run_dir in run_dirs]
    if len(singles) == 1:
        return singles[0]
    runs = [_read_seed_run(run_dir, split, eval_file) for run_dir in run_dirs]
    if len({run.group_key for run in runs}) != 1:
        raise ValueError(
            "these runs differ in more than their seed (config.json apart from "
            f"{', '.join(SEED_CONFIG_KEYS)}, or the evaluation protocol or tasks): "
            + ", ".join(str(run.directory) for run in runs)
        )
    returns = np.asarray(
        [[row.returns for row in run.document.per_task] for run in runs], dtype=np.float64
    )  # [seeds, tasks, K]
    summary = summarize(returns, seed=runs[0].document.protocol.eval_seed or 0)
    first = singles[0]

    def average(values: list[Any], kind: type) -> Any:
        known = [value for value in values if value is not None]
        return None if len(known) < len(values) else kind(np.mean(known))

    seeds = ", ".join(str(run.config.get("seed", "?")) for run in runs)
    return dataclasses.replace(
        first,
        label=f"{first.label} ({len(runs)} seeds: {seeds})",
        mean=np.asarray(summary["mean"]),
        mean_ci95=np.asarray(summary["mean_ci95"]),
        iqm=np.asarray(summary["iqm"]),
        iqm_ci95=np.asarray(summary["ci95"]),
        samples_per_step=average([r.samples_per_step for r in singles], lambda v: int(round(v))),
        adapt_seconds=average([r.adapt_seconds for r in singles], float),
        source="; ".join(r.source for r in singles),
        seeds=len(runs),
        returns=returns,
    )


def reference_results(
    reference: Mapping[str, Sequence[float]], family: str, split: str, source: str
) -> list[RunResult]:
    """Rows for published curves ``{method: [k0, k1, ...]}`` (no intervals, no costs)."""
    rows = []
    for method, curve in reference.items():
        if not isinstance(curve, Sequence) or isinstance(curve, str):
            continue  # scalars such as "oracle" or "horizon"
        mean = np.asarray(curve, dtype=np.float64)  # [K]
        nan2 = np.full((mean.size, 2), math.nan)
        rows.append(
            RunResult(
                label=f"paper {method}", method=method, family=family, split=split, mean=mean,
                mean_ci95=nan2, iqm=np.full(mean.size, math.nan), iqm_ci95=nan2,
                samples_per_step=None, num_tasks=None, adapt_seconds=None, params=None,
                flops_per_forward=None, source=source,
            )
        )  # fmt: skip
    return rows


