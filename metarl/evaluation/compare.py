"""Side-by-side comparison of evaluated runs: a markdown table, a CSV and two plots.

Every run that adapts writes ``eval_<split>.json`` in one schema
(:mod:`metarl.evaluation.document`; docs/design.md, "Run files"), read into rows by
:mod:`metarl.evaluation.results`, so runs of one family and split compare
directly: MAML, the pretrained and fine-tuned baselines and random
initialisation alike, as long as they were evaluated under the same protocol.

What is reported per run (docs/design.md, "Evaluation protocol", the three measures of the seed document):

- generalisation: mean return on the unseen tasks for each k, with its 95%
  stratified-bootstrap interval, and the interquartile mean at the last k;
- learning efficiency: return against the adaptation samples used so far
  (k x ``samples_per_step``), summarised as the area under that curve divided
  by the sample budget (the average return over the adaptation budget,
  trapezoid rule; with no adaptation steps, the k = 0 return);
- model complexity: parameters, FLOPs per forward pass and adaptation wall time.

Below the table, what each adaptation step gains over k = 0 per run, paired per
task (:func:`metarl.evaluation.stats.paired_gains`): the mean of ``return[k] -
return[0]`` over (seed, task) pairs with its 95% interval, and the share of
pairs that improved. Pairing removes the spread between tasks, so this is the
measure of whether adaptation helps at all.

The protocol (:class:`metarl.evaluation.document.ReturnsProtocol`) must agree
between the runs of one table: the horizon, the tasks (their number, the
evaluation seed, a ``--tasks`` file), what feeds each step (episodes or an
env-step budget), the number of steps and, between runs of one method, the
learning rates of the steps (each method adapts with its own: an SGD step size
for MAML, Adam's for fine-tuning). :func:`compare_runs` refuses runs that differ
(:class:`MixedProtocolsError` names the fields and the runs) unless
``allow_mixed_protocols``, which prints the differences beside the table.
Reference rows (published curves) carry no protocol and are not checked.

Plots: ``return_vs_k.png`` (mean return per k with the CI as a band) and
``return_vs_samples.png`` (the same against adaptation samples).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from metarl.evaluation.document import ReturnsProtocol
from metarl.evaluation.results import (
    RunResult,
    group_by_seed,
    load_run_result,
    pooled_result,
    reference_results,
    stale_evaluation,
)
from metarl.evaluation.stats import paired_gains

__all__ = [
    "MixedProtocolsError",
    "ProtocolDifference",
    "compare_runs",
    "gain_table",
    "markdown_table",
    "protocol_differences",
    "write_csv",
    "write_plots",
]

ALLOW_MIXED_FLAG = "--allow-mixed-protocols"


@dataclasses.dataclass(frozen=True)
class ProtocolDifference:
    """One protocol field in which the runs of a comparison differ.

    Attributes:
        field: The document's key (``horizon``, ``num_tasks``, ``inner_lrs`` ...); for learning
            rates, the method they belong to is added (``inner_lrs of maml``).
        values: Each run's value, in words, as (run label, value).
    """

    field: str
    values: tuple[tuple[str, str], ...]

    def describe(self) -> str:
        """``field (run a: value, run b: value)``."""
        return f"{self.field} (" + ", ".join(f"{label}: {value}" for label, value in self.values) + ")"


def _unknown(value: object) -> str:
    return "not recorded" if value is None else str(value)


def _lrs(protocol: ReturnsProtocol) -> str:
    return _unknown(None if protocol.inner_lrs is None else "[" + ", ".join(str(lr) for lr in protocol.inner_lrs) + "]")


# protocol fields that every run of one table must share: document key -> the value in words
_SHARED_FIELDS: dict[str, Callable[[ReturnsProtocol], str]] = {
    "horizon": lambda p: _unknown(p.horizon),
    "num_tasks": lambda p: str(p.num_tasks),
    "eval_seed": lambda p: _unknown(p.eval_seed),
    "tasks_file": lambda p: p.tasks_file or "the split's tasks",
    "samples_per_step_budget": lambda p: "by episodes" if p.samples_per_step_budget is None
    else f"{p.samples_per_step_budget} env steps",
    "steps": lambda p: str(p.steps),
}


def protocol_differences(results: Sequence[RunResult]) -> list[ProtocolDifference]:
    """The protocol fields in which the runs among ``results`` differ (references are left out).

    ``episodes_per_step`` counts only where every run is fed by episodes (no
    ``samples_per_step_budget``); ``inner_lrs`` only between runs of one method.
    """
    runs = [r for r in results if r.protocol is not None]
    differences = []

    def differ(field: str, rows: Sequence[RunResult], describe: Callable[[ReturnsProtocol], str]) -> None:
        values = tuple((r.label, describe(r.protocol)) for r in rows)
        if len({value for _, value in values}) > 1:
            differences.append(ProtocolDifference(field, values))

    for field, describe in _SHARED_FIELDS.items():
        differ(field, runs, describe)
    if all(r.protocol.samples_per_step_budget is None for r in runs):
        differ("episodes_per_step", runs, lambda p: str(p.episodes_per_step))
    for method in dict.fromkeys(r.method for r in runs):
        differ(f"inner_lrs of {method}", [r for r in runs if r.method == method], _lrs)
    return differences


class MixedProtocolsError(ValueError):
    """Runs evaluated under different protocols were given to one comparison.

    Attributes:
        differences: What differs.
    """

    def __init__(self, differences: Sequence[ProtocolDifference]) -> None:
        fields = "; ".join(difference.describe() for difference in differences)
        super().__init__(
            f"these runs were evaluated under different protocols, so their returns do not compare in one "
            f"table: they differ in {fields}. Evaluate them alike (`metarl evaluate RUN_DIR` with the same "
            f"--split, --num-tasks, --episodes-per-step or --samples-per-step, --steps and --seed; the "
            f"horizon and learning rates come from each run's config.json), or pass {ALLOW_MIXED_FLAG} "
            "to table them anyway with these differences printed beside the table."
        )
        self.differences = tuple(differences)


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


def markdown_table(results: Sequence[RunResult], differences: Sequence[ProtocolDifference] = ()) -> str:
    """The comparison as a GitHub markdown table (one row per run), with ``differences``
    (protocol fields in which the runs differ, :func:`protocol_differences`) listed below it."""
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
    iqms = iqm_table(results)
    if iqms:
        lines += ["", *iqms]
    gains = gain_table(results)
    if gains:
        lines += ["", *gains]
    if differences:
        lines += ["", f"Evaluated under different protocols ({ALLOW_MIXED_FLAG}); the rows differ in:"]
        lines += [f"- {difference.describe()}" for difference in differences]
    return "\n".join(lines) + "\n"


def iqm_table(results: Sequence[RunResult]) -> list[str]:
    """Markdown lines: each run's interquartile mean per k with its 95% bootstrap interval.

    Empty when no row has an IQM (reference curves have none)."""
    rows = [r for r in results if not np.all(np.isnan(np.asarray(r.iqm, dtype=float)))]
    if not rows:
        return []
    num_k = max(r.num_k for r in rows)
    lines = ["Interquartile mean (the mean of the middle half of the (seed, task) returns) [95% CI] after k "
             "adaptation steps.", "",
             "| run | " + " | ".join(f"k={k}" for k in range(num_k)) + " |",
             "|---|" + "---:|" * num_k]
    for r in rows:
        cells = [_interval_cell(r.iqm[k], r.iqm_ci95[k]) for k in range(r.num_k)]
        cells += ["–"] * (num_k - len(cells))
        lines.append(f"| {r.label} | " + " | ".join(cells) + " |")
    return lines


def _gains(result: RunResult) -> dict[str, list] | None:
    if result.returns is None or result.num_k < 2:
        return None
    seed = result.protocol.eval_seed if result.protocol is not None and result.protocol.eval_seed is not None else 0
    return paired_gains(result.returns, seed=seed)


def gain_table(results: Sequence[RunResult]) -> list[str]:
    """Markdown lines: each run's gain over k = 0 per k, paired per (seed, task), with the share improved.

    Empty when no row has per-task returns and more than one k (reference curves have none)."""
    rows = [(r, gains) for r in results if (gains := _gains(r)) is not None]
    if not rows:
        return []
    num_k = max(r.num_k for r, _ in rows)
    lines = ["Gain over k = 0, paired per task (return after k steps minus before, on the same task and seed): "
             "mean [95% CI], and the share of (seed, task) pairs that improved.", "",
             "| run | " + " | ".join(f"k={k}" for k in range(1, num_k)) + " |",
             "|---|" + "---:|" * (num_k - 1)]
    for r, gains in rows:
        cells = [f"{mean:+.1f} [{lo:+.1f}, {hi:+.1f}], {share:.0%}" for mean, (lo, hi), share
                 in zip(gains["mean"], gains["mean_ci95"], gains["improved"], strict=True)]
        cells += ["–"] * (num_k - 1 - len(cells))
        lines.append(f"| {r.label} | " + " | ".join(cells) + " |")
    return lines


CSV_COLUMNS: tuple[str, ...] = (
    "label", "method", "family", "split", "k", "samples", "mean", "mean_ci95_low",
    "mean_ci95_high", "iqm", "iqm_ci95_low", "iqm_ci95_high", "auc_per_budget",
    "samples_per_step", "adapt_seconds", "params", "flops_per_forward", "source",
    "gain", "gain_ci95_low", "gain_ci95_high", "share_improved",
)  # fmt: skip


def write_csv(results: Sequence[RunResult], path: str | os.PathLike[str]) -> Path:
    """One row per (run, k) with every number of the comparison."""
    _check_comparable(results)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        samples = r.samples
        gains = _gains(r)
        for k in range(r.num_k):
            if gains is None:
                gain = {"gain": "", "gain_ci95_low": "", "gain_ci95_high": "", "share_improved": ""}
            elif k == 0:
                gain = {"gain": 0.0, "gain_ci95_low": 0.0, "gain_ci95_high": 0.0, "share_improved": ""}
            else:
                gain = {"gain": gains["mean"][k - 1], "gain_ci95_low": gains["mean_ci95"][k - 1][0],
                        "gain_ci95_high": gains["mean_ci95"][k - 1][1], "share_improved": gains["improved"][k - 1]}
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
                    **gain,
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
    allow_mixed_protocols: bool = False,
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
        allow_mixed_protocols: table runs evaluated under different protocols, the
            differences listed below the table (:func:`protocol_differences`).

    Returns:
        The markdown table and the paths written.

    Raises:
        MixedProtocolsError: runs evaluated under different protocols, unless ``allow_mixed_protocols``.
        ValueError: runs of different families or splits, and every error of reading the runs.
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
    differences = protocol_differences(results)
    if differences and not allow_mixed_protocols:
        raise MixedProtocolsError(differences)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create --out {str(out)!r}: {error}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write into --out {str(out)!r}: permission denied")
    table = markdown_table(results, differences)
    stale = [f"{path}: {reason}" for path in run_dirs if (reason := stale_evaluation(path, split, eval_file))]
    if stale:
        again = (f"`metarl evaluate RUN_DIR --split {split}`" if eval_file is None else
                 f"with the flags that wrote {eval_file}")
        table += (f"\nEvaluated before the run was trained further; evaluate it again ({again}) to compare its "
                  "policy of now:\n\n" + "".join(f"- {line}\n" for line in stale))
    table_path = out / "comparison.md"
    _atomic_write_bytes(table_path, table.encode())
    written = [table_path, write_csv(results, out / "comparison.csv"), *write_plots(results, out)]
    return table, written
