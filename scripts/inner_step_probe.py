"""Probe a trained MAML run's inner step: the one-step gain at several inner learning rates and episode counts.

Answers two questions about a run that adapts little: is one step's adaptation signal too weak (does the
gain grow with more episodes per step?), and does the inner learning rate suit the split (does another lr
gain more?). Prints one JSON line per (episodes, lr): the mean return before (k0) and after (k1) one step
on the split's evaluation tasks, the mean gain with its standard error over tasks, and how many tasks
improved.

usage: python scripts/inner_step_probe.py RUN_DIR --split ood --num-tasks 40 \
           --episodes 20 80 --inner-lrs 0.05 0.1 0.2
       python scripts/inner_step_probe.py RUN_DIR --split ood --episodes 20 80 --agreement

With --agreement it prints instead, per episode count, how far one step's direction is task-specific rather
than sampling noise (metarl.evaluation.probe.inner_gradient_agreement).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from metarl.evaluation.probe import inner_gradient_agreement
from metarl.evaluation.protocol import (
    EvalOptions,
    adaptation_settings,
    evaluate_gradient_adaptation,
)
from metarl.storage.runs import RunDir, load_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a MAML (or pretrain / random-init) run directory")
    parser.add_argument("--split", default="ood", choices=("test", "ood"), help="evaluation split (default ood)")
    parser.add_argument("--num-tasks", type=int, default=40, help="evaluation tasks (default 40)")
    parser.add_argument("--episodes", type=int, nargs="+", default=[20, 80],
                        help="episodes per adaptation step to try (default 20 80)")
    parser.add_argument("--inner-lrs", type=float, nargs="+", default=None,
                        help="inner learning rates to try (default: the run's own)")
    parser.add_argument("--agreement", action="store_true",
                        help="instead of the gains, print how much two batches' inner steps agree on the same task "
                             "and across tasks, per episode count (metarl.evaluation.probe); cosines do not depend "
                             "on the learning rate, so --inner-lrs is not used")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = RunDir(args.run_dir)
    config = run.read_config()
    settings = adaptation_settings(config).keywords()
    policy = load_policy(run)
    if args.agreement:
        others = {name: value for name, value in settings.items() if name != "inner_lr"}
        for episodes in args.episodes:
            start = time.perf_counter()
            options = EvalOptions(split=args.split, num_tasks=args.num_tasks, episodes_per_step=episodes, device="cpu")
            agreement = inner_gradient_agreement(policy, policy.params(), config["family"], options,
                                                 horizon=config.get("horizon"), **others)
            line = {name: round(value, 3) for name, value in agreement.summary().items()}
            print(json.dumps({"split": args.split, **line, "tasks": args.num_tasks,
                              "seconds": round(time.perf_counter() - start, 1)}), flush=True)
        return
    for episodes in args.episodes:
        for lr in args.inner_lrs or [settings["inner_lr"]]:
            start = time.perf_counter()
            options = EvalOptions(split=args.split, num_tasks=args.num_tasks, episodes_per_step=episodes, steps=1,
                                  device="cpu")
            others = {name: value for name, value in settings.items() if name != "inner_lr"}
            result = evaluate_gradient_adaptation(policy, policy.params(), config["family"], lr, options,
                                                  horizon=config.get("horizon"), progress=False, **others)
            returns = np.asarray(result.returns)  # [tasks, 2]: before and after one step
            gain = returns[:, 1] - returns[:, 0]
            print(json.dumps({
                "split": args.split, "episodes": episodes, "inner_lr": lr,
                "k0": round(float(returns[:, 0].mean()), 2), "k1": round(float(returns[:, 1].mean()), 2),
                "gain": round(float(gain.mean()), 2), "gain_se": round(float(gain.std(ddof=1) / np.sqrt(len(gain))), 2),
                "tasks_improved": int((gain > 0).sum()), "tasks": len(gain),
                "seconds": round(time.perf_counter() - start, 1),
            }), flush=True)


if __name__ == "__main__":
    main()
