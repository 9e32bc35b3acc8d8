"""A run's ``metrics.csv`` (and TensorBoard events): reading, appending, and checking a resume against it.

``metrics.csv`` holds one row per iteration, column ``iteration`` first, then the metric keys
(namespaces ``train/``, ``adapt/``, ``loss/``, ``time/``); :class:`MetricsLogger` writes it and
the same scalars as TensorBoard events, :func:`read_metrics` reads it back, and
:func:`check_resume` refuses a ``--resume`` that would lose, repeat or skip iterations
(docs/design.md, "Run files").
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping
from pathlib import Path

from metarl.storage.checkpoint import atomic_write_text
from metarl.storage.run_dir import RunDir, RunDirError


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` as dicts of floats (empty cells skipped, partial last line dropped).

    Raises:
        RunDirError: the file is not UTF-8 text or a cell is not a number (naming the file,
            the line and the column).
    """
    path = Path(path)
    if not path.is_file():
        return []
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise RunDirError(f"{path} is not a metrics file written by metarl (not UTF-8 text: {error}); "
                          "move it away to continue the run") from None
    if text and not text.endswith("\n"):  # a write interrupted mid-line
        text = text[: text.rfind("\n") + 1]
    rows = []
    try:
        for line, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
            parsed = {}
            for key, value in row.items():
                if not key or value in ("", None):  # cells beyond the header (key None) are ignored
                    continue
                try:
                    parsed[key] = float(value)
                except ValueError:
                    raise ValueError(f"line {line}, column {key!r}: {value[:40]!r} is not a number") from None
            rows.append(parsed)
    except (ValueError, csv.Error) as error:
        raise RunDirError(f"{path} is not a metrics file written by metarl ({error}); move it away to "
                          "continue the run") from None
    return rows


def check_resume(run_dir: RunDir, checkpoint_iteration: int | None, iterations: int) -> None:
    """Refuse a ``--resume`` that would lose, repeat or skip iterations; write nothing.

    Args:
        run_dir: the run being resumed.
        checkpoint_iteration: iterations in its checkpoint (``None``: no checkpoint file).
        iterations: the total the resumed run asks for (``--iterations``).

    Raises:
        RunDirError: the checkpoint is missing although ``metrics.csv`` shows completed
            iterations; ``iterations`` is below the checkpoint's; or the checkpoint is
            ahead of ``metrics.csv`` (iterations would be skipped). ``metrics.csv`` is
            read (and checked) here, before anything is rewritten.
    """
    rows = read_metrics(run_dir.metrics_path)
    logged = max((int(row.get("iteration", 0)) for row in rows), default=0)
    if checkpoint_iteration is None:
        if logged > 0:
            raise RunDirError(
                f"--resume: {run_dir.checkpoint_path} is missing, but {run_dir.metrics_path} records {logged} "
                "completed iterations; restore the checkpoint, or start a new run in another --out directory"
            )
        return
    if iterations < checkpoint_iteration:
        raise RunDirError(
            f"--iterations {iterations} is below the {checkpoint_iteration} iterations the checkpoint of "
            f"{run_dir.path} already holds; --resume only continues a run (pass --iterations "
            f"{checkpoint_iteration} or more)"
        )
    if logged < checkpoint_iteration:
        raise RunDirError(
            f"the checkpoint of {run_dir.path} is at iteration {checkpoint_iteration} but {run_dir.metrics_path} "
            f"ends at iteration {logged}; resuming would skip iterations, so the run cannot continue"
        )


class MetricsLogger:
    """Appends one row per iteration to ``metrics.csv`` and writes TensorBoard scalars.

    Args:
        run_dir: the run directory.
        start_iteration: iterations already done (0 for a new run). Rows after
            it (logged after the last checkpoint of an interrupted run) are
            dropped, so a resumed run's metrics read like an uninterrupted run's.
        tensorboard: also write TensorBoard events.
    """

    def __init__(self, run_dir: RunDir, start_iteration: int = 0, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self.rows = [r for r in read_metrics(run_dir.metrics_path) if r.get("iteration", 0) <= start_iteration]
        self.columns: list[str] = ["iteration"]
        for row in self.rows:
            self.columns += [key for key in row if key not in self.columns]
        run_dir.path.mkdir(parents=True, exist_ok=True)
        self._rewrite()
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(run_dir.tensorboard_dir), purge_step=start_iteration + 1)

    def _rewrite(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({key: _format(value) for key, value in row.items()})
        atomic_write_text(self.run_dir.metrics_path, buffer.getvalue())

    def log(self, iteration: int, metrics: Mapping[str, float]) -> None:
        """Record ``metrics`` of ``iteration`` (1-based: iterations completed)."""
        row = {"iteration": float(iteration), **{key: float(value) for key, value in metrics.items()}}
        self.rows.append(row)
        new_columns = [key for key in row if key not in self.columns]
        if new_columns:
            self.columns += new_columns
            self._rewrite()
        else:
            with self.run_dir.metrics_path.open("a") as file:
                csv.DictWriter(file, fieldnames=self.columns, lineterminator="\n").writerow(
                    {key: _format(value) for key, value in row.items()}
                )
        if self._writer is not None:
            for key, value in metrics.items():
                if math.isfinite(float(value)):
                    self._writer.add_scalar(key, float(value), iteration)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))
