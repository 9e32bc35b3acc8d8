"""Evaluate a run through its method's evaluator (``metarl evaluate``, ``metarl.evaluate``).

The run's ``config.json["method"]`` names its registry entry (:func:`metarl.methods.get`);
the entry's ``evaluate`` function runs the evaluation protocol of docs/design.md,
"Evaluation protocol", and writes ``eval_<split>.json``. This module bounds the
sizes, checks the directory is writable and holds its lock around that call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import metarl_envs as envs
from metarl.core.interrupts import sigterm_as_interrupt
from metarl.core.sampler import env_dims
from metarl.core.validation import check_memory, step_bytes
from metarl.evaluation.protocol import SAMPLE_BUDGET_MAX_ROUNDS, EvalOptions, check_writable
from metarl.methods import get
from metarl.storage.runs import ENV_BYTES, RunDir, run_dir_lock


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

    Before any work: the run's method must be registered, the sizes are bounded
    (:func:`check_evaluation_memory`), the run directory must be writable and is then locked
    (:func:`metarl.storage.runs.run_dir_lock`) for the evaluation; SIGTERM is handled as Ctrl-C.
    """
    run = RunDir(run_dir)
    config = run.read_config()
    evaluator = get(config["method"]).load("evaluate")
    check_evaluation_memory(config, options, allow_large)
    check_writable(run.path, run.eval_path(options.split).name)
    with run_dir_lock(run.path, create=False), sigterm_as_interrupt():
        return evaluator(run, config, options, progress)
