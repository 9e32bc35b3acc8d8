"""SIGTERM handled like Ctrl-C: long commands save their state and exit.

A cluster scheduler, a preempted cloud machine or Ray stopping a task sends
SIGTERM, not SIGINT. :func:`sigterm_as_interrupt` maps SIGTERM to
:class:`Terminated`, a ``KeyboardInterrupt``, for the duration of a ``with``
block, so every ``except KeyboardInterrupt`` that saves a checkpoint also
runs on SIGTERM. After the first signal further SIGTERMs are ignored until the
block ends, so the checkpoint being saved is not interrupted in turn.

Exit status of the ``metarl`` console script: 130 after Ctrl-C (SIGINT),
143 after SIGTERM (128 + the signal number, what a shell reports for a process
the signal killed), both after the state was saved. The signal is remembered
apart from the exception, because Ray turns any ``KeyboardInterrupt`` raised
while the driver waits in ``ray.get``/``ray.wait`` into a plain one (a study, a
training with ``--sampler ray``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

EXIT_SIGINT = 130
EXIT_SIGTERM = 143

_sigterm_received = False  # since the last sigterm_as_interrupt block was entered


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM arrives inside :func:`sigterm_as_interrupt`."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``) once.

    Outside the main thread (where Python cannot install signal handlers) the block
    runs unchanged. Blocks may nest; each restores the handler it found.
    """
    global _sigterm_received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False
    _sigterm_received = False

    def handler(signum: int, frame: FrameType | None) -> None:
        global _sigterm_received
        nonlocal raised
        if raised:
            return  # already stopping: let the checkpoint be written
        raised = _sigterm_received = True
        raise Terminated(f"received signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """143 for :class:`Terminated` or after SIGTERM in :func:`sigterm_as_interrupt` (however the
    interrupt was re-raised since), 130 for any other ``KeyboardInterrupt`` (SIGINT)."""
    return EXIT_SIGTERM if isinstance(interrupt, Terminated) or _sigterm_received else EXIT_SIGINT


class StopRequest:
    """What :func:`deferred_interrupts` recorded: falsy until SIGINT or SIGTERM arrives."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    def interrupt(self, message: str) -> KeyboardInterrupt:
        """The exception to raise once the loop has stopped and saved: :class:`Terminated` for SIGTERM."""
        return Terminated(message) if self.signum == signal.SIGTERM else KeyboardInterrupt(message)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[StopRequest]:
    """Within the block SIGINT and SIGTERM only set the yielded :class:`StopRequest`.

    For loops that stop between iterations (check the request, save, then raise
    ``request.interrupt(...)``). Outside the main thread the request stays unset.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        request.signum = signum

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
