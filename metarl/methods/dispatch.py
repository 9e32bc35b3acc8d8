"""What ``metarl train``, ``evaluate`` and ``render`` do with a method, looked up in the registry.

The command modules parse flags and print; the studies and the Python API call these
functions directly (docs/design.md, "Methods"):

- :func:`train` parses ``metarl train <word>``'s flags (``Method.train_args``) and runs ``Method.train``;
- :func:`evaluate_run` bounds the sizes, locks the run directory and calls ``Method.evaluate``;
- :func:`render_run` renders a run with the provider its entry names (``Method.policies``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import metarl.methods as methods
from metarl.core.flags import parse

if TYPE_CHECKING:
    from metarl.evaluation.protocol import EvalOptions
    from metarl.video.run_videos import RenderOptions, RenderResult


def parse_train_args(method: methods.Method, argv: Sequence[str]) -> Any:
    """``metarl train <word> ARGV`` parsed into the method's ``train_args`` dataclass (``--help`` exits)."""
    return parse(method.load("train_args"), list(argv), prog=f"metarl train {method.train_word}")


def train(word: str, argv: Sequence[str]) -> int:
    """Run ``metarl train <word> ARGV``: parse the flags, then ``Method.train(args)``; the exit status."""
    method = methods.by_train_word(word)
    return int(method.load("train")(parse_train_args(method, argv)) or 0)


def check_evaluation_memory(config: dict[str, Any], options: EvalOptions, allow_large: bool = False) -> None:
    """Refuse an evaluation whose episode batches would need more than half the machine's memory."""
    import metarl_envs as envs
    from metarl.core.rollout import env_dims
    from metarl.core.validation import check_memory, step_bytes
    from metarl.evaluation.protocol import SAMPLE_BUDGET_MAX_ROUNDS
    from metarl.storage.runs import ENV_BYTES

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


def resolve_evaluator(method: str) -> Any:
    """The evaluator function of ``method`` (``UserError`` listing the methods that have one)."""
    from metarl.core.errors import UserError

    known = {m.name: m for m in methods.methods()}
    if method not in known:
        raise UserError(
            f"no evaluator for runs of method {method!r}; evaluators exist for: {', '.join(sorted(known))}"
        )
    return known[method].load("evaluate")


def evaluate_run(run_dir: Path | str, options: EvalOptions, progress: bool = True,
                 allow_large: bool = False) -> dict[str, Any]:
    """Evaluate the run in ``run_dir`` and write its ``eval_<split>.json``; returns the document.

    Before any work: the sizes are bounded (:func:`check_evaluation_memory`), the run
    directory must be writable and is then locked (:func:`metarl.storage.runs.run_dir_lock`) for
    the evaluation; SIGTERM is handled as Ctrl-C.
    """
    from metarl.core.interrupts import sigterm_as_interrupt
    from metarl.evaluation.protocol import check_writable
    from metarl.storage.runs import RunDir, run_dir_lock

    run = RunDir(run_dir)
    config = run.read_config()
    evaluator = resolve_evaluator(config["method"])
    check_evaluation_memory(config, options, allow_large)
    check_writable(run.path, run.eval_path(options.split).name)
    with run_dir_lock(run.path, create=False), sigterm_as_interrupt():
        return evaluator(run, config, options, progress)


def renderable(name: str) -> methods.Method:
    """The registry entry of a run's method that ``metarl render`` can show (``ValueError`` otherwise)."""
    known = methods.methods()
    entry = next((m for m in known if m.name == name), None)
    if entry is None or (entry.policies is None and entry.kind != "identification"):
        supported = ", ".join(sorted(m.name for m in known if m.policies is not None or m.kind == "identification"))
        raise ValueError(f"cannot render runs of method {name!r}; rendering supports: {supported}")
    return entry


def render_run(run_dir: str | os.PathLike[str], options: RenderOptions, out: str | os.PathLike[str] | None = None,
               allow_large: bool = False) -> RenderResult:
    """Render a run on one evaluation task after each k (:func:`metarl.video.run_videos.render_run`),
    its policies given by its method's registry entry."""
    from metarl.video.run_videos import render_run as render_with

    return render_with(run_dir, options, out, allow_large, lookup=renderable)
