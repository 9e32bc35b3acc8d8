"""Side-by-side comparison of evaluated runs: a markdown table, a CSV and two plots.

Every run that adapts by gradient steps writes ``eval_<split>.json`` in one
schema (docs/design.md, "Run files"), so any set of runs of one family and split compares
directly: MAML, the pretrained and fine-tuned baselines and random
initialisation alike.

What is reported per run (docs/design.md, "Evaluation protocol", the three measures of the seed document):

- generalisation: mean return on the unseen tasks for each k, with its 95%
  stratified-bootstrap interval, and the interquartile mean at the last k;
- learning efficiency: return against the adaptation samples used so far
  (k x ``samples_per_step``), summarised as the area under that curve divided
  by the sample budget (the average return over the adaptation budget,
  trapezoid rule; with no adaptation steps, the k = 0 return);
- model complexity: parameters, FLOPs per forward pass and adaptation wall time.

Intervals come from the documents (``returns.mean_ci95``); a document that lacks
them (written before that key existed) gets them recomputed from its per-task
returns with :func:`metarl.evaluation.stats.summarize`. Optionally a reference table (the
MAML paper's curves, ``{method: [k0, k1, ...]}``) is added as extra rows.

With ``group_seeds``, runs that differ only in their training seed (the same
``config.json`` apart from ``seed`` and ``device``, evaluated on the same tasks
with the same protocol) are pooled into one row: the mean and IQM over seeds
and tasks, with rliable's stratified bootstrap over both for the interval
(docs/design.md, "Evaluation protocol"), so a claim rests on every seed trained and not on one.

Plots: ``return_vs_k.png`` (mean return per k with the CI as a band) and
``return_vs_samples.png`` (the same against adaptation samples).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metarl.evaluation.stats import summarize

__all__ = [
    "RunResult",
    "compare_runs",
    "group_by_seed",
    "pooled_result",
    "load_run_result",
    "markdown_table",
    "write_csv",
    "write_plots",
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


def _read_json_object(path: Path, missing_hint: str) -> dict[str, Any]:
    """The JSON object in ``path``; a missing file's error ends with ``missing_hint``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; {missing_hint}")
    try:
        document = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return document


def _require(document: Mapping[str, Any], key: str, where: Path) -> Any:
    if key not in document:
        raise ValueError(f"{where} lacks {key!r}; it is not an eval_<split>.json (its schema: docs/design.md, 'Run files')")
    return document[key]


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
    document = _read_json_object(path, missing_hint)
    if "returns" not in document and "accuracy" in document:
        raise ValueError(
            f"{path} holds task-identification accuracy (a ProtoNet run); compare takes runs "
            "evaluated by return (maml, pretrain, finetune, random_init)"
        )
    returns = _require(document, "returns", path)
    mean = np.asarray(_require(returns, "mean", path), dtype=np.float64)  # [K]
    if mean.ndim != 1 or mean.size == 0:
        raise ValueError(f"{path}: returns.mean must be a non-empty list, got {returns['mean']!r}")
    iqm = np.asarray(returns.get("iqm", [math.nan] * mean.size), dtype=np.float64)  # [K]
    iqm_ci = np.asarray(returns.get("ci95", [[math.nan, math.nan]] * mean.size), dtype=np.float64)
    if "mean_ci95" in returns:
        mean_ci = np.asarray(returns["mean_ci95"], dtype=np.float64)  # [K, 2]
    else:
        per_task = np.asarray([row["returns"] for row in _require(document, "per_task", path)])
        summary = summarize(
            per_task, seed=int(document.get("eval_seed", 0))
        )  # per_task: [tasks, K]
        mean_ci = np.asarray(summary["mean_ci95"], dtype=np.float64)
    for name, array in (
        ("returns.iqm", iqm),
        ("returns.ci95", iqm_ci),
        ("returns.mean_ci95", mean_ci),
    ):
        if array.shape[0] != mean.size:
            raise ValueError(
                f"{path}: {name} has {array.shape[0]} entries, returns.mean has {mean.size}"
            )

    def optional_number(key: str, kind: type) -> Any:
        value = document.get(key)
        return None if value is None else kind(value)

    return RunResult(
        label=label or directory.resolve().name,
        method=str(_require(document, "method", path)),
        family=str(_require(document, "family", path)),
        split=str(document.get("split", split)),
        mean=mean,
        mean_ci95=mean_ci.reshape(mean.size, 2),
        iqm=iqm,
        iqm_ci95=iqm_ci.reshape(mean.size, 2),
        samples_per_step=optional_number("samples_per_step", int),
        num_tasks=optional_number("num_tasks", int),
        adapt_seconds=optional_number("adapt_seconds", float),
        params=optional_number("params", int),
        flops_per_forward=optional_number("flops_per_forward", int),
        source=str(path),
    )


#: ``config.json`` keys in which the seeds of one pooled group may differ.
SEED_CONFIG_KEYS: tuple[str, ...] = ("seed", "device", "sampler")
#: Keys of ``eval_<split>.json`` that define the evaluation protocol; pooled runs share them all.
PROTOCOL_KEYS: tuple[str, ...] = (
    "method", "family", "split", "num_tasks", "episodes_per_step", "samples_per_step_budget",
    "inner_lrs", "eval_seed",
)  # fmt: skip


_CONFIG_HINT = "pooling seeds needs each run's config.json (written by metarl train)"


@dataclasses.dataclass(frozen=True)
class _SeedRun:
    """A run's ``config.json`` and evaluation document, read once for pooling."""

    directory: Path
    config: dict[str, Any]
    document: dict[str, Any]
    path: Path  # the evaluation document's path

    @property
    def group_key(self) -> str:
        """What runs pooled as seeds of one configuration must share, as a canonical string."""
        shared_config = {k: v for k, v in self.config.items() if k not in SEED_CONFIG_KEYS}
        protocol = {key: self.document.get(key) for key in PROTOCOL_KEYS}
        tasks = [row.get("task") for row in _require(self.document, "per_task", self.path)]
        return json.dumps([shared_config, protocol, tasks], sort_keys=True)


def _read_seed_run(run_dir: str | os.PathLike[str], split: str, eval_file: str | None) -> _SeedRun:
    directory = Path(run_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"run directory {str(directory)!r} does not exist")
    config = _read_json_object(directory / "config.json", _CONFIG_HINT)
    path, missing_hint = _eval_path(directory, split, eval_file)
    return _SeedRun(directory, config, _read_json_object(path, missing_hint), path)


def group_by_seed(
    run_dirs: Sequence[str | os.PathLike[str]], split: str, eval_file: str | None = None
) -> list[list[Path]]:
    """Partition runs into groups that differ only in their training seed.

    Runs fall in one group when their ``config.json`` agree apart from
    :data:`SEED_CONFIG_KEYS` and their evaluations share the protocol
    (:data:`PROTOCOL_KEYS`) and the tasks, in order. Groups keep the order in
    which their first run was given.

    Raises:
        FileNotFoundError: a run lacks ``config.json`` or its evaluation.
        ValueError: one of them is not a JSON object.
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
        [
            [
                _require(row, "returns", run.path)
                for row in _require(run.document, "per_task", run.path)
            ]
            for run in runs
        ],
        dtype=np.float64,
    )  # [seeds, tasks, K]
    summary = summarize(returns, seed=int(runs[0].document.get("eval_seed", 0)))
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


def _check_comparable(results: Sequence[RunResult]) -> None:
    families = sorted({r.family for r in results})
    splits = sorted({r.split for r in results})
    if len(families) > 1:
        listing = ", ".join(f"{r.label}: {r.family}" for r in results)
        raise ValueError(f"compare needs runs of one family; got {listing}")
    if len(splits) > 1:
        raise ValueError(f"compare needs evaluations of one split; got {', '.join(splits)}")
    labels = [r.label for r in results]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(
            f"two runs share the label(s) {duplicates}; give them distinct directory names"
        )


def _cell(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _interval_cell(mean: float, interval: np.ndarray) -> str:
    if np.any(np.isnan(interval)):
        return _cell(mean)
    return f"{mean:.1f} [{interval[0]:.1f}, {interval[1]:.1f}]"


def _integer_cell(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def markdown_table(results: Sequence[RunResult]) -> str:
    """The comparison as a GitHub markdown table (one row per run)."""
    _check_comparable(results)
    num_k = max(r.num_k for r in results)
    first = results[0]
    tasks = sorted({r.num_tasks for r in results if r.num_tasks is not None})
    lines = [
        f"{first.family}, split {first.split}"
        + (f", {'/'.join(map(str, tasks))} tasks" if tasks else "")
        + ": mean return [95% stratified-bootstrap CI] after k adaptation steps",
        "",
    ]
    header = ["run", "method", *[f"k={k}" for k in range(num_k)]]
    header += [f"IQM k={num_k - 1}", "AUC/budget", "samples/step", "adapt s", "params", "FLOPs/fwd"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|")
    for r in results:
        cells = [r.label, r.method]
        for k in range(num_k):
            cells.append(_interval_cell(r.mean[k], r.mean_ci95[k]) if k < r.num_k else "–")
        cells.append(_cell(r.iqm[-1]))
        cells.append(_cell(r.area_under_curve))
        cells.append(_integer_cell(r.samples_per_step))
        cells.append(_cell(r.adapt_seconds, 2))
        cells.append(_integer_cell(r.params))
        cells.append(_integer_cell(r.flops_per_forward))
        lines.append("| " + " | ".join(cells) + " |")
    if any(r.seeds > 1 for r in results):
        lines += [
            "",
            "Rows marked (N seeds) pool N training seeds evaluated on the same tasks: mean and IQM "
            "over seeds and tasks, CI from a bootstrap over both.",
        ]
    return "\n".join(lines) + "\n"


CSV_COLUMNS: tuple[str, ...] = (
    "label", "method", "family", "split", "k", "samples", "mean", "mean_ci95_low",
    "mean_ci95_high", "iqm", "iqm_ci95_low", "iqm_ci95_high", "auc_per_budget",
    "samples_per_step", "adapt_seconds", "params", "flops_per_forward", "source",
)  # fmt: skip


def write_csv(results: Sequence[RunResult], path: str | os.PathLike[str]) -> Path:
    """One row per (run, k) with every number of the comparison."""
    _check_comparable(results)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        samples = r.samples
        for k in range(r.num_k):
            writer.writerow(
                {
                    "label": r.label, "method": r.method, "family": r.family, "split": r.split,
                    "k": k, "samples": "" if samples is None else int(samples[k]),
                    "mean": r.mean[k], "mean_ci95_low": r.mean_ci95[k, 0],
                    "mean_ci95_high": r.mean_ci95[k, 1], "iqm": r.iqm[k],
                    "iqm_ci95_low": r.iqm_ci95[k, 0], "iqm_ci95_high": r.iqm_ci95[k, 1],
                    "auc_per_budget": r.area_under_curve,
                    "samples_per_step": "" if r.samples_per_step is None else r.samples_per_step,
                    "adapt_seconds": "" if r.adapt_seconds is None else r.adapt_seconds,
                    "params": "" if r.params is None else r.params,
                    "flops_per_forward": "" if r.flops_per_forward is None else r.flops_per_forward,
                    "source": r.source,
                }
            )  # fmt: skip
    out = Path(path)
    _atomic_write_bytes(out, buffer.getvalue().encode())
    return out


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)


def write_plots(results: Sequence[RunResult], out_dir: str | os.PathLike[str]) -> list[Path]:
    """``return_vs_k.png`` and ``return_vs_samples.png`` (mean with the 95% CI as a band).

    Reference rows (no intervals) are drawn dashed; runs without
    ``samples_per_step`` are left out of the samples plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _check_comparable(results)
    out = Path(out_dir)
    first = results[0]
    title = f"{first.family} ({first.split} split)"
    written = []
    for name, xlabel in (
        ("return_vs_k.png", "adaptation steps k"),
        ("return_vs_samples.png", "adaptation samples (env steps, all tasks)"),
    ):
        figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=110)
        for index, r in enumerate(results):
            if name == "return_vs_k.png":
                x = np.arange(r.num_k)
            elif r.samples is None:
                continue
            else:
                x = r.samples
            color = f"C{index % 10}"
            reference = bool(np.all(np.isnan(r.mean_ci95)))
            axes.plot(
                x, r.mean, marker="o", color=color, linestyle="--" if reference else "-",
                label=f"{r.label} ({r.method})" if r.method not in r.label else r.label,
            )  # fmt: skip
            if not reference:
                axes.fill_between(x, r.mean_ci95[:, 0], r.mean_ci95[:, 1], color=color, alpha=0.2)
        if name == "return_vs_k.png":
            axes.set_xticks(range(max(r.num_k for r in results)))
        axes.set_xlabel(xlabel)
        axes.set_ylabel("mean return (95% CI)")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        target = out / name
        temp = out / f".{name}.tmp.png"
        figure.savefig(temp)
        plt.close(figure)
        os.replace(temp, target)
        written.append(target)
    return written


def compare_runs(
    run_dirs: Sequence[str | os.PathLike[str]],
    split: str,
    out_dir: str | os.PathLike[str],
    reference: Mapping[str, Sequence[float]] | None = None,
    reference_source: str = "reference",
    group_seeds: bool = False,
    eval_file: str | None = None,
) -> tuple[str, list[Path]]:
    """Compare evaluated runs; write ``comparison.md``, ``comparison.csv`` and the plots.

    Args:
        run_dirs: Run directories, each with ``eval_<split>.json`` (or ``eval_file``).
        split: ``test`` or ``ood``.
        out_dir: Output folder (created).
        reference: Optional published curves ``{method: [k0, ...]}`` of the same
            family, added as dashed rows.
        reference_source: Citation for the reference rows.
        group_seeds: pool runs that differ only in their seed into one row
            (:func:`group_by_seed`, :func:`pooled_result`).
        eval_file: read this file of each run directory instead of
            ``eval_<split>.json`` (e.g. ``eval_test_sample_budget.json``).

    Returns:
        The markdown table and the paths written.
    """
    if not run_dirs:
        raise ValueError("compare needs at least one run directory")
    if group_seeds:
        groups = group_by_seed(run_dirs, split, eval_file)
        results = [pooled_result(group, split, eval_file) for group in groups]
    else:
        results = [load_run_result(path, split, eval_file=eval_file) for path in run_dirs]
    if reference:
        results += reference_results(reference, results[0].family, split, reference_source)
    _check_comparable(results)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create --out {str(out)!r}: {error}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write into --out {str(out)!r}: permission denied")
    table = markdown_table(results)
    table_path = out / "comparison.md"
    _atomic_write_bytes(table_path, table.encode())
    written = [table_path, write_csv(results, out / "comparison.csv"), *write_plots(results, out)]
    return table, written
