"""``metarl evaluate RUN_DIR --split test|ood``: the evaluation protocol of docs/design.md, "Evaluation protocol".

``--tasks FILE`` evaluates on explicit tasks instead (written to ``eval_custom.json``).

Reads ``config.json["method"]`` and dispatches through :data:`EVALUATORS`, a
dict from method name to ``"module:function"``. Each evaluator has the
signature ``(run_dir: RunDir, config: dict, options: EvalOptions, progress:
bool) -> dict`` and writes ``eval_<split>.json`` itself. Another method plugs
in with one line here.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Annotated, Any

import tyro

import metarl_envs as envs
from metarl.core.errors import UserError
from metarl.core.flags import OffSwitch, choice, device_choice, optional, parse
from metarl.core.interrupts import sigterm_as_interrupt
from metarl.core.sampler import env_dims
from metarl.core.validation import check_memory, step_bytes
from metarl.evaluation.protocol import (
    ADAPT_STEPS,
    CUSTOM_SPLIT,
    EPISODES_PER_STEP,
    EVAL_SEED,
    NUM_TASKS,
    SAMPLE_BUDGET_MAX_ROUNDS,
    EvalOptions,
    check_writable,
    format_returns_table,
    load_tasks_file,
)
from metarl.storage.runs import ENV_BYTES, RunDir, run_dir_lock

# method (config.json["method"]) -> "module:function" of its evaluator
EVALUATORS: dict[str, str] = {
    "maml": "metarl.evaluation.protocol:evaluate_maml_run",
    "random_init": "metarl.algorithms.random_init:evaluate_random_init_run",
    "finetune": "metarl.algorithms.finetune.evaluation:evaluate_finetune_run",
    "pretrain": "metarl.algorithms.pretrain:evaluate_pretrain_run",
    "protonet": "metarl.identification.protonet:evaluate_protonet_run",
}


@dataclasses.dataclass(frozen=True)
class EvaluateArgs:
    """Evaluate a trained run on unseen tasks: return before and after k = 1..3 adaptation steps."""

    run_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """The run directory written by `metarl train ...`."""
    split: Annotated[str, choice(("test", "ood"))] = "test"
    """test (unseen tasks of the training distribution) or ood (outside the training support)."""
    num_tasks: int = NUM_TASKS
    """Number of evaluation tasks (drawn from the fixed evaluation seed)."""
    episodes_per_step: int = EPISODES_PER_STEP
    """Fresh episodes per task for each adaptation step."""
    steps: int = ADAPT_STEPS
    """Adaptation steps; returns are reported for k = 0..steps."""
    seed: int = EVAL_SEED
    """Evaluation seed (fixes the tasks and the sampling noise; keep it to compare methods)."""
    device: Annotated[str, device_choice()] = "auto"
    """auto, cpu or cuda."""
    samples_per_step: Annotated[int | None, optional("INT", "by --episodes-per-step episodes")] = None
    """Feed each adaptation step by complete episodes until every task has this many environment steps
    (the MAML paper's test protocol: 4000 for the point robot) instead of by --episodes-per-step episodes.
    For runs adapted by gradient steps (maml, pretrain, random_init)."""
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


def resolve_evaluator(method: str) -> Any:
    """The evaluator function of ``method`` (``UserError`` listing the known methods)."""
    if method not in EVALUATORS:
        raise UserError(
            f"no evaluator for runs of method {method!r}; evaluators exist for: {', '.join(sorted(EVALUATORS))}"
        )
    module_name, function_name = EVALUATORS[method].split(":")
    return getattr(importlib.import_module(module_name), function_name)


def check_evaluation_memory(config: dict[str, Any], options: EvalOptions, allow_large: bool = False) -> None:
    """Refuse an evaluation whose episode batches would need more than half the machine's memory."""
    family = config["family"]
    obs_dim, act_dim = env_dims(family)
    horizon = config.get("horizon") or envs.family_spec(family).horizon
    policy = config.get("policy") if isinstance(config.get("policy"), dict) else {}
    hidden = tuple(h for h in policy.get("hidden_sizes", config.get("hidden_sizes", ())) if isinstance(h, int))
    if options.samples_per_step is not None:
        steps_per_task = SAMPLE_BUDGET_MAX_ROUNDS * (options.samples_per_step + horizon)
        flags = f"--num-tasks {options.num_tasks} x --samples-per-step {options.samples_per_step}"
    else:
        steps_per_task = options.episodes_per_step * horizon
        flags = f"--num-tasks {options.num_tasks} x --episodes-per-step {options.episodes_per_step} x horizon {horizon}"
    estimate = options.num_tasks * (steps_per_task * 2 * step_bytes(obs_dim, act_dim, hidden)
                                    + options.episodes_per_step * ENV_BYTES)
    check_memory("the evaluation", estimate, flags, allow_large)


def evaluate(run_dir: Path | str, options: EvalOptions, progress: bool = True,
             allow_large: bool = False) -> dict[str, Any]:
    """Evaluate the run in ``run_dir`` and write its ``eval_<split>.json``; returns the document.

    Before any work: the sizes are bounded (:func:`check_evaluation_memory`), the run
    directory must be writable and is then locked (:func:`metarl.storage.runs.run_dir_lock`) for
    the evaluation; SIGTERM is handled as Ctrl-C.
    """
    run = RunDir(run_dir)
    config = run.read_config()
    evaluator = resolve_evaluator(config["method"])
    check_evaluation_memory(config, options, allow_large)
    check_writable(run.path, run.eval_path(options.split).name)
    with run_dir_lock(run.path, create=False), sigterm_as_interrupt():
        return evaluator(run, config, options, progress)


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
    if "accuracy" in document:  # task identification (protonet): accuracy per context size, no returns
        print(importlib.import_module("metarl.identification.protonet").format_accuracy_report(document))
        print(f"wrote {RunDir(args.run_dir).eval_path(options.split)}")
        return 0
    budget = (f"whole episodes up to {options.samples_per_step} steps" if options.samples_per_step is not None
              else f"{document['episodes_per_step']} episodes")
    print(
        f"{document['method']} on {document['family']} ({document['split']} split, {document['num_tasks']} tasks, "
        f"{budget} per step): mean return per adaptation step"
    )
    print(format_returns_table(document["returns"]["mean"]))
    print(f"wrote {RunDir(args.run_dir).eval_path(options.split)}")
    return 0
