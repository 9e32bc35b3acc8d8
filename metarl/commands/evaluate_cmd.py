"""``metarl evaluate RUN_DIR --split test|ood``: the evaluation protocol of docs/design.md, "Evaluation protocol".

``--tasks FILE`` evaluates on explicit tasks instead (written to ``eval_custom.json``).

Reads ``config.json["method"]`` and calls the evaluator its method registry entry names
(``Method.evaluate`` in :mod:`metarl.methods`, through :func:`metarl.methods.dispatch.evaluate_run`).
Each evaluator has the signature ``(run_dir: RunDir, config: dict, options: EvalOptions,
progress: bool) -> dict`` and writes ``eval_<split>.json`` itself.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Annotated

import tyro

from metarl.core.flags import OffSwitch, flag_dataclass, optional, own_flags, parse
from metarl.evaluation.document import IdentificationDocument, document_from_json
from metarl.evaluation.protocol import (
    CUSTOM_SPLIT,
    EvalOptions,
    format_returns_table,
    load_tasks_file,
)
from metarl.methods.dispatch import evaluate_run as evaluate
from metarl.storage.runs import RunDir

# The protocol's flags are EvalOptions' own fields (their docstrings are the help texts); the command
# adds the run directory, --tasks FILE (EvalOptions holds the tasks read from it) and its switches.
PROTOCOL_FLAGS: tuple[str, ...] = ("split", "num_tasks", "episodes_per_step", "steps", "seed", "device",
                                   "samples_per_step")


@dataclasses.dataclass(frozen=True)
class _CommandFlags:
    run_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """The run directory written by `metarl train ...`."""
    tasks: Annotated[Path | None, optional("PATH", "the split's tasks")] = None
    """JSON file of explicit tasks to evaluate on instead of the split's (--split and --num-tasks are then
    ignored): a list of task dicts such as [{"family": "Point2DNav", "goal_x_m": 0.3, "goal_y_m": -0.2}]
    (parameters as `metarl envs` lists them), {"tasks": [...]}, or an eval_<split>.json. Writes
    eval_custom.json."""
    no_progress: OffSwitch = False
    """Hide the progress bar."""
    allow_large: bool = False
    """Allow sizes (tasks x episodes x horizon, a --tasks file above 16 MiB) estimated above half of this
    machine's memory."""


_COMMAND = {flag[0]: flag for flag in own_flags(_CommandFlags)}
_PROTOCOL = {flag[0]: flag for flag in own_flags(EvalOptions)}
EvaluateArgs = flag_dataclass(
    "EvaluateArgs",
    "Evaluate a trained run on unseen tasks: return before and after k = 1..3 adaptation steps.",
    [_COMMAND["run_dir"], *(_PROTOCOL[name] for name in PROTOCOL_FLAGS),
     *(_COMMAND[name] for name in ("tasks", "no_progress", "allow_large"))],
    __name__,
)


def main(argv: list[str]) -> int:
    args = parse(EvaluateArgs, argv, prog="metarl evaluate")
    tasks = None if args.tasks is None else tuple(load_tasks_file(args.tasks, allow_large=args.allow_large))
    options = EvalOptions(
        split=args.split if tasks is None else CUSTOM_SPLIT,
        num_tasks=args.num_tasks if tasks is None else len(tasks),
        episodes_per_step=args.episodes_per_step,
        steps=args.steps,
        seed=args.seed,
        device=args.device,
        samples_per_step=args.samples_per_step,
        tasks=tasks,
        tasks_source=None if args.tasks is None else str(args.tasks),
    )
    document = evaluate(args.run_dir, options, progress=not args.no_progress, allow_large=args.allow_large)
    typed = document_from_json(document, "the evaluation document")
    if isinstance(typed, IdentificationDocument):  # ProtoNet: accuracy per context size, no returns
        print(importlib.import_module("metarl.evaluation.identification").format_accuracy_report(document))
    else:
        protocol = typed.protocol
        budget = (f"whole episodes up to {protocol.samples_per_step_budget} steps"
                  if protocol.samples_per_step_budget is not None else f"{protocol.episodes_per_step} episodes")
        print(
            f"{typed.method} on {protocol.family} ({protocol.split} split, {protocol.num_tasks} tasks, "
            f"{budget} per step): mean return per adaptation step"
        )
        print(format_returns_table(typed.returns.mean))
    print(f"wrote {RunDir(args.run_dir).eval_path(options.split)}")
    return 0
