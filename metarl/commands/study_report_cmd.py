"""``metarl study report DIR``: pooled tables per family and split, plots and one markdown report.

See :mod:`metarl.studies.report`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import tyro

from metarl.core.flags import optional, parse


@dataclasses.dataclass(frozen=True)
class StudyReportArgs:
    """Pooled tables per family and split, plots, generalisation gap, env steps, wall-clock: report.md."""

    study_dir: tyro.conf.Positional[Annotated[Path, tyro.conf.arg(metavar="STUDY_DIR")]]
    """A study directory written by `metarl study run`."""
    out: Annotated[Path | None, optional("PATH", "STUDY_DIR/report")] = None
    """Folder for the report."""


def main(argv: list[str]) -> int:
    args = parse(StudyReportArgs, argv, prog="metarl study report")
    from metarl.studies.report import write_report

    path = write_report(args.study_dir, args.out)
    print(f"wrote {path}")
    return 0
