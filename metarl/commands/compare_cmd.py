"""``metarl compare RUN_DIR... --split test|ood --out DIR``: table, CSV and plots of evaluated runs.

Each run directory needs ``eval_<split>.json`` (``metarl evaluate RUN_DIR --split
...``); runs evaluated under different protocols are refused unless
``--allow-mixed-protocols`` (:func:`metarl.evaluation.compare.protocol_differences`).
Writes ``comparison.md``, ``comparison.csv``, ``return_vs_k.png`` and
``return_vs_samples.png`` into ``--out`` and prints the table.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import tyro

from metarl.core.errors import UserError
from metarl.core.flags import choice, optional, parse
from metarl.evaluation.compare import MixedProtocolsError, compare_runs


@dataclasses.dataclass(frozen=True)
class CompareArgs:
    """Compare evaluated runs of one family: return per k with 95% CIs, sample efficiency, cost."""

    run_dirs: Annotated[
        tuple[Path, ...], tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR ...", help_behavior_hint="(one or more)")
    ]
    """Run directories, each evaluated on --split (they hold eval_<split>.json)."""
    split: Annotated[str, choice(("test", "ood"))] = "test"
    """Which evaluation to compare: test (unseen tasks) or ood (unseen dynamics/goals)."""
    out: Path = Path("comparison")
    """Folder for comparison.md, comparison.csv, return_vs_k.png and return_vs_samples.png."""
    reference: Annotated[Path | None, optional("PATH", "none")] = None
    """Optional JSON of published curves, {"returns": {family: {method: [k0, ...]}}, "source": ...}
    (e.g. metarl/data/maml_paper_returns.json, the MAML paper's curves); its rows for the runs' family are added."""
    eval_file: Annotated[str | None, optional("NAME", "eval_<split>.json")] = None
    """Read this file of each run directory instead of eval_<split>.json, e.g. eval_test_sample_budget.json
    (scripts/reproduce_maml.py) or eval_custom.json (metarl evaluate --tasks)."""
    group_seeds: bool = False
    """Pool runs that differ only in their training seed (the same config.json apart from seed and device,
    evaluated on the same tasks with the same protocol) into one row: mean and IQM over seeds and tasks,
    95% CI from a bootstrap over both."""
    allow_mixed_protocols: bool = False
    """Table runs evaluated under different protocols (horizon, tasks, episodes or samples per step, steps,
    learning rates of one method); the fields that differ are printed below the table. Without it such runs
    are refused."""


def load_reference(path: Path, family: str) -> tuple[dict[str, list[float]], str]:
    """The curves of ``family`` in a reference file, and the file's citation.

    Raises:
        UserError: unreadable file, or the family is not in it (lists those that are).
    """
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"--reference {path} cannot be read as JSON: {error}") from None
    families = document.get("returns", {}) if isinstance(document, dict) else {}
    if family not in families:
        raise UserError(
            f"--reference {path} has no curves for {family}; it has: {', '.join(sorted(families)) or 'none'}"
        )
    return families[family], str(document.get("source", path))


def main(argv: list[str]) -> int:
    args = parse(CompareArgs, argv, prog="metarl compare")
    if not args.run_dirs:
        raise UserError("give at least one run directory: metarl compare RUN_DIR... --split test")
    reference, source = None, "reference"
    if args.reference is not None:
        from metarl.evaluation.results import load_run_result

        family = load_run_result(args.run_dirs[0], args.split, eval_file=args.eval_file).family
        reference, source = load_reference(args.reference, family)
    try:
        table, written = compare_runs(
            args.run_dirs,
            args.split,
            args.out,
            reference,
            source,
            group_seeds=args.group_seeds,
            eval_file=args.eval_file,
            allow_mixed_protocols=args.allow_mixed_protocols,
        )
    except MixedProtocolsError as error:
        raise UserError(str(error)) from None
    print(table)
    print("wrote " + ", ".join(str(path) for path in written))
    return 0
