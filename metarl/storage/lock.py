"""The writer lock of a run directory, and opening a run directory for writing.

:func:`run_dir_lock` holds an exclusive lock on the directory (``.metarl.lock``, an
``fcntl`` lock through the ``filelock`` package, released by the kernel when the process
ends, so the lock of a killed process never blocks the next one) while a command writes
it, with the holder's PID in ``.metarl.lock.pid`` for the message another writer gets.
:func:`writing_run` combines the lock with :func:`metarl.storage.run_dir.check_run_dir`
for the trainers, and removes a new run that failed before its first checkpoint, so an
error (a full disk, say) leaves no half-written directory behind (docs/design.md, "Run files").
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import filelock

from metarl.storage.checkpoint import atomic_write_text
from metarl.storage.run_dir import (
    LOCK_FILES,
    LOCK_NAME,
    LOCK_PID_NAME,
    RunDir,
    RunDirError,
    RunDirLockedError,
    check_run_dir,
)

_PID_WAIT_S = 1.0  # how long a refused writer waits for the holder to write its PID


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_holder(path: Path) -> int | None:
    """The PID in the lock's sidecar file if that process is alive (waits briefly for a new holder)."""
    deadline = time.monotonic() + _PID_WAIT_S
    while True:
        try:
            pid = int((path / LOCK_PID_NAME).read_text().strip())
        except (OSError, ValueError):
            pid = None
        if pid is not None and _pid_alive(pid):
            return pid
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


@contextlib.contextmanager
def run_dir_lock(path: str | os.PathLike[str], create: bool = True) -> Iterator[Path]:
    """Hold the exclusive writer lock of the run directory ``path`` for the ``with`` block.

    The lock is ``path/.metarl.lock`` (``filelock``: an ``fcntl`` lock the kernel
    drops when the holder exits, however it exits, so a stale lock of a dead
    process is simply taken over); ``path/.metarl.lock.pid`` holds the holder's
    PID. Neither file is removed on release (removing a lock file races with
    the next writer opening it). A process may hold the lock of several
    directories, but not the same one twice.

    Args:
        path: the run directory; created (with its parents) if ``create``.
        create: create ``path`` if it does not exist (a new run).

    Yields:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        RunDirLockedError: another process holds the lock (the message names its PID).
        OSError: the directory or the lock file cannot be created (read-only, permission...).
    """
    path = Path(path)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(path / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        holder = _lock_holder(path)
        who = f"PID {holder}" if holder is not None else "a process whose PID is not recorded yet"
        writer = f"this process ({who})" if holder == os.getpid() else f"another metarl process ({who})"
        raise RunDirLockedError(
            f"{path} is being written by {writer}; wait for it to finish, stop it, or choose another directory"
        ) from None
    try:
        atomic_write_text(path / LOCK_PID_NAME, f"{os.getpid()}\n")
        yield path
    finally:
        lock.release()


@contextlib.contextmanager
def writing_run(path: str | os.PathLike[str], config: Mapping[str, Any], resume: bool) -> Iterator[RunDir]:
    """Lock ``path`` (:func:`run_dir_lock`) and check it can hold ``config`` (:func:`check_run_dir`).

    For a new run (no ``config.json`` yet) an exception leaving the block before the
    run's first checkpoint exists removes what the block wrote (and the directory, if
    this call created it): a failed start leaves the directory as it found it.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out {path} is a file, not a directory; choose a directory path")
    try:
        check_run_dir(path, config, resume)  # refuse what is refusable before creating anything (lock files)
    except RunDirError:
        if (path / LOCK_NAME).is_file():  # a run being written: say by whom rather than what it holds
            with run_dir_lock(path, create=False):
                pass
        raise
    existed = path.exists()
    missing_parents = [parent for parent in path.parents if not parent.exists()]
    with run_dir_lock(path) as locked:
        run_dir = RunDir(locked)
        new_run = not run_dir.config_path.exists()
        checked = False
        try:
            run_dir = check_run_dir(locked, config, resume)  # again: another writer may have come first
            checked = True  # from here on, a new run's directory held nothing but the lock files
            yield run_dir
        except BaseException:
            if not checked and not existed:
                _discard_new_run(run_dir, existed, missing_parents)
            elif checked and new_run and not run_dir.checkpoint_path.exists():
                _discard_new_run(run_dir, existed, missing_parents)
            raise


def _discard_new_run(run_dir: RunDir, existed: bool, missing_parents: list[Path]) -> None:
    """Remove what a failed new run wrote (everything but the lock files; the directory if it is new)."""
    for entry in run_dir.path.iterdir():
        if entry.name in LOCK_FILES:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    if not existed:
        shutil.rmtree(run_dir.path, ignore_errors=True)
        for parent in missing_parents:  # nearest first
            with contextlib.suppress(OSError):
                parent.rmdir()
