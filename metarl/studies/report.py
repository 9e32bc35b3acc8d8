"""``metarl study report DIR``: the pooled results of a study, as tables, plots and one markdown file.

For every family and split, each method's seeds are pooled into one row with
:func:`metarl.evaluation.results.pooled_result` (the rows of ``metarl compare
--group-seeds``: mean and IQM over seeds and tasks, 95% bootstrap interval over
both), labelled by the study's method name; the table, CSV and the two plots
(return against k, and against adaptation samples) come from
:mod:`metarl.evaluation.compare` as well. Beside them: the generalisation gap (test minus
ood, per k) of each method, the environment steps each method trained on
(from the checkpoints, or the fine-tuning budget) and the wall-clock per run
(from the manifest, and the training time the checkpoints record), and the
training curves (training return against env steps, one line per seed) with, per method, the
training return over the last tenth of each run against the tenth before (has it levelled off?).
Last, the study's time: each session of the runner, its wall-clock and how it ended, and the task time.

Writes ``DIR/report/report.md`` and, per family and split,
``DIR/report/<family>/<split>/{comparison.md,comparison.csv,return_vs_k.png,return_vs_samples.png}``
and ``DIR/report/<family>/training_curves.png``.
Runs not yet evaluated on a split are left out of its table (the report says which).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from metarl.core.errors import UserError
from metarl.evaluation.compare import markdown_table, write_csv, write_plots
from metarl.evaluation.results import RunResult, pooled_result, stale_evaluation
from metarl.storage.checkpoint import CheckpointError, atomic_write_text, load_checkpoint
from metarl.storage.runs import RunDir, read_metrics
from metarl.studies.manifest import MANIFEST

REPORT_DIR = "report"


def _read_manifest(study_dir: Path) -> dict[str, Any]:
    path = study_dir / MANIFEST
    if not path.is_file():
        raise UserError(f"{study_dir} is not a study directory (no {MANIFEST}); run `metarl study run` first")
    return json.loads(path.read_text())


def method_results(study_dir: Path, manifest: dict[str, Any], family: str, split: str
                   ) -> tuple[list[RunResult], list[str]]:
    """Each method's seeds of ``family`` evaluated on ``split``, pooled into one row; and the runs left out:
    those not evaluated on ``split`` yet (their key) and those trained further since their evaluation
    (their key and why, :func:`metarl.evaluation.results.stale_evaluation`)."""
    results, missing = [], []
    for method in manifest["methods"]:
        runs = [run for run in manifest["runs"] if run["family"] == family and run["method"] == method]
        evaluated = []
        for run in runs:
            path = study_dir / run["path"]
            if not (path / f"eval_{split}.json").is_file():
                if split in run["splits"]:
                    missing.append(run["key"])
            elif (reason := stale_evaluation(path, split)) is not None:
                missing.append(f"{run['key']} ({reason})")
            else:
                evaluated.append(path)
        if not evaluated:
            continue
        pooled = pooled_result(evaluated, split)
        seeds = ", ".join(path.name.removeprefix("seed") for path in evaluated)
        results.append(dataclasses.replace(pooled, label=f"{method} ({len(evaluated)} seeds: {seeds})"))
    return results, missing


def env_steps(run_dir: Path) -> int | None:
    """Environment steps a run trained on (None if unknown, e.g. not trained yet)."""
    run = RunDir(run_dir)
    if not run.config_path.is_file():
        return None
    config = run.read_config()
    if config["method"] == "random_init":
        return 0
    if config["method"] == "finetune":
        return int(config["timesteps"]) if (run.path / "checkpoint" / "policy.safetensors").is_file() else None
    try:
        _, metadata = load_checkpoint(run.checkpoint_path)
    except (FileNotFoundError, CheckpointError):
        return None
    return int(metadata["env_steps"]) if "env_steps" in metadata else None


def train_seconds(run_dir: Path) -> float | None:
    """Training time the run's checkpoint records (MAML, pretrain; None otherwise)."""
    try:
        _, metadata = load_checkpoint(RunDir(run_dir).checkpoint_path)
    except (FileNotFoundError, CheckpointError):
        return None
    return float(metadata["train_seconds"]) if "train_seconds" in metadata else None


# method (config.json) -> (metrics.csv column of the training return, column of the env steps so far)
TRAINING_CURVES: dict[str, tuple[str, str]] = {
    "maml": ("train/return_after_adaptation", "train/env_steps"),
    "pretrain": ("train/return", "train/env_steps"),
    "finetune": ("train/episode_return", "train/timesteps"),
}


def training_curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """A run's training return against env steps (``metrics.csv``; MAML's return after adaptation),
    or None if it has no such curve (not started, random initialisation)."""
    run = RunDir(run_dir)
    if not run.config_path.is_file():
        return None
    columns = TRAINING_CURVES.get(run.read_config()["method"])
    if columns is None:
        return None
    rows = [row for row in read_metrics(run.metrics_path) if columns[0] in row and columns[1] in row]
    if not rows:
        return None
    return (np.asarray([row[columns[1]] for row in rows], dtype=np.float64),
            np.asarray([row[columns[0]] for row in rows], dtype=np.float64))


def levelling(returns: np.ndarray, fraction: float = 0.1) -> tuple[float, float] | None:
    """Mean training return over the last ``fraction`` of a curve's rows and over the same number of
    rows just before (has training levelled off?); None for a curve of fewer than 2 / fraction rows."""
    window = int(len(returns) * min(fraction, 0.5))
    if window < 1:
        return None
    return float(returns[-2 * window:-window].mean()), float(returns[-window:].mean())


def _levelling_lines(study_dir: Path, manifest: dict[str, Any], family: str) -> list[str]:
    rows = []
    for method in manifest["methods"]:
        pairs = []
        for run in _runs(manifest, family, method, done=True):  # finished training: whole curves only
            curve = training_curve(study_dir / run["path"])
            level = None if curve is None else levelling(curve[1])
            if level is not None:
                pairs.append(level)
        if pairs:
            before, last = np.mean(pairs, axis=0)
            rows.append(f"| {method} | {len(pairs)} | {before:.1f} | {last:.1f} | {last - before:+.1f} |")
    if not rows:
        return []
    return ["Has training levelled off? Training return (MAML: after adaptation) over the last tenth of each "
            "finished run's rows of metrics.csv against the tenth just before, mean over the runs:", "",
            "| method | runs | previous tenth | last tenth | change |", "|---|---:|---:|---:|---:|", *rows, ""]


def write_training_curves(study_dir: Path, manifest: dict[str, Any], family: str, target: Path) -> bool:
    """Training return against env steps of every run of ``family`` (one colour per method, one line
    per seed; MAML's is the return after adaptation). Returns False if no run has a curve yet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    drawn = False
    for index, method in enumerate(manifest["methods"]):
        labelled = False
        for run in _runs(manifest, family, method):
            curve = training_curve(study_dir / run["path"])
            if curve is None:
                continue
            axes.plot(*curve, color=f"C{index % 10}", linewidth=1, label=None if labelled else method)
            labelled = drawn = True
    if drawn:
        axes.set_xlabel("environment steps")
        axes.set_ylabel("training return (MAML: after adaptation)")
        axes.set_title(f"{family}: training curves, one line per seed")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        temp = target.with_name(f".{target.name}.tmp.png")
        figure.savefig(temp)
        os.replace(temp, target)
    plt.close(figure)
    return drawn


def _runs(manifest: dict[str, Any], family: str, method: str, done: bool = False) -> list[dict[str, Any]]:
    """The manifest's runs of ``family`` and ``method`` (only the finished ones if ``done``)."""
    return [run for run in manifest["runs"] if run["family"] == family and run["method"] == method
            and (not done or run["status"] == "done")]


def _mean_cell(values: list[float | None], digits: int = 0) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "–"
    text = f"{np.mean(known):,.{digits}f}"
    return text if len(known) == len(values) else f"{text} ({len(known)}/{len(values)} runs)"


def _gap_table(by_split: dict[str, list[RunResult]]) -> list[str]:
    test = {r.label.split(" (")[0]: r for r in by_split.get("test", [])}
    ood = {r.label.split(" (")[0]: r for r in by_split.get("ood", [])}
    common = [name for name in test if name in ood]
    if not common:
        return []
    num_k = max(test[name].num_k for name in common)
    lines = ["Generalisation gap: mean return on test minus ood, per k (positive: worse on ood).", "",
             "| method | " + " | ".join(f"k={k}" for k in range(num_k)) + " |",
             "|---|" + "---:|" * num_k]
    for name in common:
        gap = test[name].mean - ood[name].mean
        lines.append(f"| {name} | " + " | ".join(f"{value:.1f}" for value in gap) + " |")
    return lines + [""]


# a session without an end whose manifest was written this recently is taken as still running (a running
# `metarl study run` rewrites the manifest about every second)
RUNNING_WITHIN_S = 300.0


def _time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


def _hours_minutes(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


def session_times(manifest: dict[str, Any], now: datetime.datetime | None = None
                  ) -> list[tuple[dict[str, Any], float | None, str]]:
    """Each session of the manifest with its wall-clock in seconds (None if not recorded) and how it ended:
    ``finished``, ``stopped`` (Ctrl-C or SIGTERM), ``error``, ``running``, ``killed`` (no end recorded and
    not written for :data:`RUNNING_WITHIN_S`: SIGKILL, or its machine stopped; its wall-clock runs to its
    last write) or ``not recorded`` (written by a metarl that did not record ends)."""
    now = now or datetime.datetime.now(datetime.UTC)
    if now.tzinfo is None:  # the manifest's times are UTC
        now = now.replace(tzinfo=datetime.UTC)
    sessions = manifest.get("sessions", [])
    out = []
    for index, session in enumerate(sessions):
        started = _time(session["started"])
        if session.get("ended"):
            out.append((session, (_time(session["ended"]) - started).total_seconds(), session["outcome"]))
        elif session.get("last_written"):
            last = _time(session["last_written"])
            running = index == len(sessions) - 1 and (now - last).total_seconds() < RUNNING_WITHIN_S
            out.append((session, (last - started).total_seconds(), "running" if running else "killed"))
        else:
            out.append((session, None, "not recorded"))
    return out


def study_time_lines(manifest: dict[str, Any], now: datetime.datetime | None = None) -> list[str]:
    """The report's "Study time" section: one row per session, and the totals (wall-clock, task time,
    how many times the study was stopped and continued)."""
    times = session_times(manifest, now)
    task_hours = sum(run["wall_seconds"] for run in manifest["runs"]) / 3600
    lines = ["## Study time", ""]
    if times:
        lines += ["Each session is one `metarl study run` that had runs to do (UTC; a killed session's wall-clock "
                  "runs to its last write of the manifest, within seconds of its end):", "",
                  "| session | started | wall-clock | runs to do | CPUs per run | how it ended |",
                  "|---:|---|---:|---:|---:|---|"]
        for number, (session, seconds, outcome) in enumerate(times, 1):
            cpus = session.get("cpus_per_run")
            lines.append(f"| {number} | {session['started'][:16].replace('T', ' ')} | "
                         f"{'–' if seconds is None else _hours_minutes(seconds)} | {session.get('runs', '–')} | "
                         f"{'–' if cpus is None else f'{cpus:g}'} | {outcome} |")
        lines.append("")
        known = [seconds for _, seconds, _ in times if seconds is not None]
        outcomes = [outcome for _, _, outcome in times]
        ends = ", ".join(f"{outcomes.count(o)} {o}" for o in
                         ("finished", "stopped", "killed", "error", "running", "not recorded") if o in outcomes)
        wall = ("not recorded" if not known else f"{sum(known) / 3600:.2f} h" + (
            "" if len(known) == len(times) else f" over the {len(known)} of {len(times)} sessions that recorded it"))
        continued = len(times) - 1
        lines += [f"{len(times)} session{'s' if len(times) != 1 else ''} ({ends}): the study was continued "
                  f"{continued} time{'s' if continued != 1 else ''}. Wall-clock: {wall}."]
    cpus = {session.get("cpus_per_run") for session in manifest.get("sessions", [])}
    cpu_hours = (f" With {next(iter(cpus)):g} CPU per run in every session, {task_hours * next(iter(cpus)):.2f} "
                 "CPU-hours." if len(cpus) == 1 and None not in cpus else "")
    lines += [f"Task time, the sum of every run's wall-clock over all its attempts: {task_hours:.2f} h.{cpu_hours}",
              ""]
    return lines


def write_report(study_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write the study's report (see the module docstring); returns the path of ``report.md``."""
    study_dir = Path(study_dir)
    manifest = _read_manifest(study_dir)
    out_dir = Path(out) if out is not None else study_dir / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = list(manifest["evaluation"]["splits"])
    lines = [f"# Study {manifest['study']}", ""]
    if manifest.get("description"):
        lines += [manifest["description"], ""]
    statuses = [run["status"] for run in manifest["runs"]]
    lines += [f"{len(statuses)} runs ({', '.join(f'{statuses.count(s)} {s}' for s in sorted(set(statuses)))}); "
              f"seeds {manifest['seeds']}; study file {manifest.get('source')}.", ""]
    for family in manifest["families"]:
        lines += [f"## {family}", ""]
        by_split: dict[str, list[RunResult]] = {}
        for split in splits:
            results, missing = method_results(study_dir, manifest, family, split)
            if not results:
                lines += [f"No run of {family} is evaluated on {split} yet.", ""]
                continue
            by_split[split] = results
            folder = out_dir / family / split
            folder.mkdir(parents=True, exist_ok=True)
            table = markdown_table(results)
            atomic_write_text(folder / "comparison.md", table)
            write_csv(results, folder / "comparison.csv")
            write_plots(results, folder)
            relative = folder.relative_to(out_dir)
            lines += [f"### {split} split", "", table.rstrip(), ""]
            if missing:
                lines += [f"Left out, not evaluated on {split} yet or trained further since: {', '.join(missing)}.", ""]
            lines += [f"![return vs k]({relative}/return_vs_k.png) "
                      f"![return vs samples]({relative}/return_vs_samples.png)", ""]
        lines += _gap_table(by_split)
        (out_dir / family).mkdir(parents=True, exist_ok=True)
        if write_training_curves(study_dir, manifest, family, out_dir / family / "training_curves.png"):
            lines += [f"![training curves]({family}/training_curves.png)", ""]
        lines += _levelling_lines(study_dir, manifest, family)
        lines += ["Training cost per finished run, mean over its seeds: environment steps trained on, training "
                  "time the checkpoint records, and the wall-clock of the study's tasks (train and evaluate, all "
                  "attempts); attempts count every run.",
                  "", "| method | env steps | train s | task wall s | attempts |", "|---|---:|---:|---:|---:|"]
        for method in manifest["methods"]:
            runs = _runs(manifest, family, method)
            done = [run if run["status"] == "done" else None for run in runs]  # unfinished runs count as unknown
            lines.append(
                f"| {method} | {_mean_cell([run and env_steps(study_dir / run['path']) for run in done])} | "
                f"{_mean_cell([run and train_seconds(study_dir / run['path']) for run in done])} | "
                f"{_mean_cell([run and (run['wall_seconds'] or None) for run in done])} | "
                f"{sum(run['attempts'] for run in runs)} |"
            )
        lines.append("")
    lines += study_time_lines(manifest)
    lines += ["Package versions: " + ", ".join(f"{k} {v}" for k, v in manifest["versions"].items()) + ".", ""]
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines))
    return report


__all__ = ["write_report", "study_time_lines", "session_times", "method_results", "write_training_curves",
           "training_curve", "levelling", "env_steps", "train_seconds", "REPORT_DIR"]
