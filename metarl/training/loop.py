"""The one training loop (docs/design.md, "Run files"): checkpoints, Ctrl-C, metrics and progress.

Every iterative trainer (MAML, pretrain, ProtoNet, SB3 fine-tuning) runs
through :func:`train_loop`. The trainer knows how to take one iteration and
how to describe its state; the loop owns everything around that:

- a checkpoint of the starting state when the run has none yet (iteration 0),
  one every ``checkpoint_every`` iterations and one at the end, each written
  atomically (:func:`metarl.storage.checkpoint.save_checkpoint`);
- one ``metrics.csv`` row (and optionally TensorBoard scalars) per iteration
  through :class:`metarl.storage.runs.MetricsLogger`, which drops rows logged
  after the checkpoint a resumed run starts from;
- a progress bar;
- Ctrl-C and SIGTERM (a ``KeyboardInterrupt`` inside
  :func:`metarl.core.interrupts.sigterm_as_interrupt`): the unfinished
  iteration is discarded, the state after the last completed iteration is
  saved, one line says so on stderr, and the interrupt is re-raised (the CLI
  exits 130, or 143 after SIGTERM).

The caller holds :func:`metarl.storage.runs.writing_run` (lock, resume
checks), has written ``config.json``, holds
:func:`~metarl.core.interrupts.sigterm_as_interrupt`, builds or restores its
trainer and then calls :func:`train_loop`. Because the saved state is what
:meth:`Trainer.state` described between two iterations, ``--resume`` restores
the trainer to exactly that point and continues bit-exactly (on CPU).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from metarl.core.validation import check_int
from metarl.storage.checkpoint import save_checkpoint
from metarl.storage.runs import IterationState, MetricsLogger, RunDir, check_resume

Payload = tuple[dict[str, torch.Tensor], dict[str, Any]]
"""``(tensors, metadata)`` as :func:`metarl.storage.checkpoint.save_checkpoint` takes them."""


class Trainer(Protocol):
    """One iterative training run, as :func:`train_loop` drives it."""

    @property
    def iteration(self) -> int:
        """Iterations completed so far (0 for a fresh run; the checkpoint's on resume)."""
        ...

    def step(self) -> Mapping[str, float]:
        """Run iteration ``iteration + 1`` (and count it); return its metrics row (``{}``: no row)."""
        ...

    def state(self) -> Payload:
        """``(tensors, metadata)`` of the state after the last completed iteration.

        The tensors must be copies (later steps must not change them): the loop
        keeps the last one to save if the next iteration is interrupted.
        """
        ...


class IterationTrainer:
    """A :class:`Trainer` from a step function and a checkpoint function over an :class:`IterationState`.

    ``step_fn(state)`` runs one iteration and returns its metrics row; the trainer
    counts it. ``state_fn(state)`` returns the checkpoint payload. MAML and the
    pretrained baseline are trainers of this kind.
    """

    def __init__(self, progress: IterationState, step_fn: Callable[[IterationState], dict[str, float]],
                 state_fn: Callable[[IterationState], Payload]) -> None:
        self.progress = progress
        self._step_fn = step_fn
        self._state_fn = state_fn

    @property
    def iteration(self) -> int:
        return self.progress.iteration

    def step(self) -> dict[str, float]:
        metrics = self._step_fn(self.progress)
        self.progress.iteration += 1
        return metrics

    def state(self) -> Payload:
        return self._state_fn(self.progress)


def resumed_state(run: RunDir, resume: bool, iterations: int, fresh: IterationState,
                  restore: Callable[[Path], IterationState]) -> IterationState:
    """The state a run starts from: ``fresh``, or with ``resume`` its checkpoint's (``restore(path)``).

    Refuses (:func:`metarl.storage.runs.check_resume`) a resume that would go backwards,
    skip iterations, or continue a run whose checkpoint is missing.
    """
    if not resume:
        return fresh
    if run.checkpoint_path.exists():
        state = restore(run.checkpoint_path)
        check_resume(run, state.iteration, iterations)
        return state
    check_resume(run, None, iterations)
    return fresh


@dataclasses.dataclass(frozen=True)
class LoopOptions:
    """How :func:`train_loop` runs.

    ``postfix``, when given, maps an iteration's metrics to the progress bar's
    postfix fields (e.g. ``{"ret": "12.3"}``).
    """

    iterations: int
    """Total iterations of the run: the loop runs ``trainer.iteration + 1 .. iterations``."""
    desc: str
    """Progress-bar label, e.g. ``"maml HalfCheetahDir"``."""
    checkpoint_every: int = 1
    """Save every this many iterations (and always at the end)."""
    progress: bool = True
    """Show a tqdm progress bar."""
    tensorboard: bool = False
    """Also write TensorBoard scalars."""
    unit: str = "it"
    """Progress-bar unit."""
    postfix: Callable[[Mapping[str, float]], Mapping[str, str]] | None = None
    """Progress-bar postfix of an iteration's metrics (``None``: none)."""

    def __post_init__(self) -> None:
        for name, low in (("iterations", 0), ("checkpoint_every", 1)):
            check_int(name, getattr(self, name), low)


def train_loop(run: RunDir, trainer: Trainer, options: LoopOptions) -> None:
    """Run ``trainer`` up to ``options.iterations`` in the run directory ``run`` (module docstring).

    Raises:
        KeyboardInterrupt: after saving the state of the last completed iteration
            (:class:`metarl.core.interrupts.Terminated` on SIGTERM); the unfinished
            iteration's metrics row, if any was written, is dropped on ``--resume``.
    """
    snapshot = trainer.state()
    if not run.checkpoint_path.exists():
        save_checkpoint(run.checkpoint_path, *snapshot)
    logger = MetricsLogger(run, trainer.iteration, tensorboard=options.tensorboard)
    bar = tqdm(total=options.iterations, initial=trainer.iteration, desc=options.desc,
               disable=not options.progress, unit=options.unit)
    try:
        while trainer.iteration < options.iterations:
            metrics = trainer.step()
            iteration = trainer.iteration
            if metrics:  # {}: no row for this iteration (a trainer that reports every few iterations)
                logger.log(iteration, metrics)
            snapshot = trainer.state()
            if iteration % options.checkpoint_every == 0 or iteration == options.iterations:
                save_checkpoint(run.checkpoint_path, *snapshot)
            bar.update(1)
            if options.postfix is not None and metrics:
                bar.set_postfix(options.postfix(metrics))
    except KeyboardInterrupt:
        save_checkpoint(run.checkpoint_path, *snapshot)
        print(f"\ninterrupted: saved iteration {snapshot[1].get('iteration')} to {run.checkpoint_path}; "
              "continue with --resume", file=sys.stderr)
        raise
    finally:
        bar.close()
        logger.close()
