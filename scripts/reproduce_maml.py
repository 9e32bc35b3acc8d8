"""Reproduce the MAML paper's locomotion/navigation results at the paper's configurations.

For each family, trains ``metarl train maml --preset paper`` (Finn et al. 2017:
Point2DNav 20 tasks x 20 episodes, horizon 100, 100 iterations; HalfCheetahDir
40 tasks x 20 episodes, max KL 0.02, 100 iterations; HalfCheetahVel 40 tasks x
10 episodes, 475 iterations; horizon 200 and ReLU policies for both, see
:mod:`metarl.algorithms.presets`), evaluates it with the
protocol of docs/design.md, "Evaluation protocol" (40 unseen test tasks, k = 0..3, 20 episodes per step,
later steps at half the inner lr) and prints our mean returns beside the
paper's, with the wall-clock time of training and evaluation. Point2DNav is
also evaluated on the paper's own 40 test goals (its ``test_maml_point.py``
draws them with ``np.random.seed(1); np.random.uniform(-0.5, 0.5, (40, 2))``),
written to ``paper_goals.json`` in the run directory and evaluated with
``metarl evaluate RUN --tasks RUN/paper_goals.json`` (``eval_custom.json``),
and with the paper's test budget of 4000 samples per step
(``--samples-per-step 4000``, ``eval_test_sample_budget.json``).

Training runs in chunks of iterations with bit-exact resume, so ``--time-limit``
can stop it at a chunk boundary (the result then says how many iterations were
reached) and running the script again continues the same run directories.

Usage::

    nice -n 10 python scripts/reproduce_maml.py --family Point2DNav
    python scripts/reproduce_maml.py --family HalfCheetahDir HalfCheetahVel --time-limit 3600
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import torch

from metarl.algorithms.maml.training import train_maml
from metarl.algorithms.presets import maml_preset
from metarl.core.flags import OffSwitch, device_choice, optional, parse
from metarl.evaluation.paper import paper_returns
from metarl.evaluation.protocol import CUSTOM_SPLIT, EvalOptions
from metarl.methods.dispatch import evaluate_run as evaluate
from metarl.storage.runs import RunDir, read_metrics
from metarl_envs.point2d import Point2DNavTask


@dataclasses.dataclass(frozen=True)
class ReproduceArgs:
    """Train MAML at the paper's configuration and compare k = 0..3 with the paper's figures."""

    family: tuple[str, ...] = ("Point2DNav", "HalfCheetahDir", "HalfCheetahVel")
    """Families to run, in order (e.g. --family Point2DNav HalfCheetahDir)."""
    out_root: Path = Path("runs/reproduce")
    """Where the run directories go (<out_root>/<family>-paper-seed<seed>)."""
    seed: int = 0
    """Run seed."""
    device: Annotated[str, device_choice()] = "auto"
    """auto, cpu or cuda."""
    iterations: Annotated[int | None, optional("INT", "the paper preset's")] = None
    """Override the paper preset's number of meta-iterations."""
    time_limit: Annotated[float | None, optional("SECONDS", "no limit")] = None
    """Stop training a family after about this many seconds (at a chunk boundary) and evaluate."""
    chunk: int = 5
    """Iterations per training chunk (checkpoint and time-limit granularity)."""
    threads: int = 1
    """CPU threads for torch."""
    no_progress: OffSwitch = False
    """Hide progress bars."""


# The paper's evaluation budget per adaptation step (the notes of the MAML paper code: "each step uses 20
# trajectories (40 for point 2D and ant direction)"); metarl evaluate's default is 20.
PAPER_EPISODES_PER_STEP = {"Point2DNav": 40, "AntDir": 40}
# What its test script (maml_examples/test_maml_point.py) actually gave each step: VPG with
# batch_size=4000, i.e. whole episodes until 4000 env steps; more than 40 once episodes end early.
PAPER_POINT_SAMPLES_PER_STEP = 4000


def paper_point_goals() -> list[Point2DNavTask]:
    """The 40 test goals of the MAML paper's point evaluation (numpy's legacy generator, seed 1)."""
    legacy = np.random.RandomState(1)
    return [Point2DNavTask(float(x), float(y)) for x, y in legacy.uniform(-0.5, 0.5, size=(40, 2))]


def reproduce(family: str, args: ReproduceArgs) -> dict:
    """Train (or continue), evaluate and compare one family; returns the summary."""
    config = maml_preset("paper", family)
    if args.iterations is not None:
        config = config.replace(iterations=args.iterations)
    run_dir = RunDir(args.out_root / f"{family}-paper-seed{args.seed}")
    start = time.perf_counter()
    done = len(read_metrics(run_dir.metrics_path)) if run_dir.config_path.exists() else 0
    stopped_early = False
    while done < config.iterations:
        if args.time_limit is not None and time.perf_counter() - start > args.time_limit:
            stopped_early = True
            break
        target = min(config.iterations, done + args.chunk)
        result = train_maml(
            config.replace(iterations=target), run_dir.path, seed=args.seed, device=args.device, preset="paper",
            resume=run_dir.config_path.exists(), progress=not args.no_progress,
        )
        done = result.iterations
    train_seconds = time.perf_counter() - start
    rows = read_metrics(run_dir.metrics_path)
    total_train_seconds = rows[-1]["time/total_s"] if rows else 0.0

    episodes_per_step = PAPER_EPISODES_PER_STEP.get(family, 20)
    options = EvalOptions(split="test", episodes_per_step=episodes_per_step, device=args.device)
    paper_goals_returns = sample_budget_returns = None
    if family == "Point2DNav":
        goals = paper_point_goals()
        goals_path = run_dir.write_json("paper_goals.json", {"tasks": [task.to_dict() for task in goals]})
        paper_goals_options = EvalOptions(
            split=CUSTOM_SPLIT, num_tasks=len(goals), episodes_per_step=episodes_per_step, device=args.device,
            tasks=tuple(goals), tasks_source=str(goals_path),
        )
        paper_goals_returns = evaluate(run_dir.path, paper_goals_options, progress=not args.no_progress)["returns"]
        # the paper's test script fed each step by 4000 samples of whole episodes (40 x horizon 100);
        # kept as eval_test_sample_budget.json; the episode protocol below then writes eval_test.json
        budget_options = EvalOptions(split="test", samples_per_step=PAPER_POINT_SAMPLES_PER_STEP, device=args.device)
        budget_document = evaluate(run_dir.path, budget_options, progress=not args.no_progress)
        run_dir.write_json("eval_test_sample_budget.json", budget_document)
        sample_budget_returns = budget_document["returns"]
    eval_start = time.perf_counter()
    document = evaluate(run_dir.path, options, progress=not args.no_progress)
    eval_seconds = time.perf_counter() - eval_start
    paper = paper_returns()["returns"].get(family, {}).get("maml")
    summary = {
        "family": family,
        "iterations": done,
        "paper_iterations": maml_preset("paper", family).iterations,
        "stopped_early": stopped_early,
        "episodes_per_step": episodes_per_step,
        "ours": document["returns"]["mean"],
        "ours_ci95_of_mean": document["returns"]["mean_ci95"],
        "ours_on_paper_goals": None if paper_goals_returns is None else paper_goals_returns["mean"],
        "ours_paper_sample_budget": None if sample_budget_returns is None else sample_budget_returns["mean"],
        "paper": paper,
        "train_seconds_total": total_train_seconds,
        "train_seconds_this_call": train_seconds,
        "eval_seconds": eval_seconds,
        "seconds_per_iteration": total_train_seconds / max(done, 1),
        "run_dir": str(run_dir.path),
    }
    run_dir.write_json("reproduce.json", summary)
    return summary


def main() -> None:
    args = parse(ReproduceArgs, sys.argv[1:], prog="python scripts/reproduce_maml.py")
    torch.set_num_threads(args.threads)
    summaries = []
    for family in args.family:
        summary = reproduce(family, args)
        summaries.append(summary)
        print(f"\n{family}: {summary['iterations']} iterations "
              f"({'stopped by the time limit' if summary['stopped_early'] else 'complete'}), "
              f"training {summary['train_seconds_total'] / 60:.1f} min "
              f"({summary['seconds_per_iteration']:.1f} s/iteration), evaluation {summary['eval_seconds']:.0f} s")
        print("k".ljust(20) + "".join(f"{k:>9d}" for k in range(len(summary["ours"]))))
        for label, key in (("ours", "ours"), ("ours, paper's goals", "ours_on_paper_goals"),
                           ("ours, 4000 samples", "ours_paper_sample_budget"), ("paper", "paper")):
            if summary[key] is not None:
                print(label.ljust(20) + "".join(f"{v:>9.1f}" for v in summary[key]))
    print(json.dumps(summaries, indent=2))


if __name__ == "__main__":
    main()
