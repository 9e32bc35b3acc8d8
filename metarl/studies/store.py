"""The study's file store on the driver's node (:class:`RunStore`, a Ray actor) and a task's working
copy of a run kept in step with it (:class:`FileSync`); see :mod:`metarl.studies.runner`."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from metarl.cluster.ray_support import require_ray
from metarl.storage.checkpoint import atomic_write_bytes

STORE_PREFIX = "metarl-study-store-"


class RunStore:
    """Ray actor on the driver's node: run files into the study directory, attempts and nodes per run."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.attempts: dict[str, list[dict[str, Any]]] = {}

    def begin(self, key: str, node_id: str, node_ip: str, pid: int) -> int:
        """Record a new attempt of ``key``; returns its number (1 for the first)."""
        self.attempts.setdefault(key, []).append(
            {"node_id": node_id, "node_ip": node_ip, "pid": pid, "start": time.time(), "end": None}
        )
        return len(self.attempts[key])

    def end(self, key: str, status: str) -> None:
        """Record how the latest attempt of ``key`` ended."""
        self.attempts[key][-1].update(end=time.time(), status=status)

    def status(self) -> dict[str, list[dict[str, Any]]]:
        return self.attempts

    def put_files(self, relative: str, files: dict[str, bytes]) -> None:
        """Write ``files`` (paths relative to the run directory ``relative``) atomically, checkpoint last."""
        base = self._inside(relative)
        for name in sorted(files, key=lambda n: n.startswith("checkpoint/")):
            target = self._inside(relative, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, files[name])
        del base

    def get_files(self, relative: str) -> dict[str, bytes]:
        """Every file of the run directory ``relative`` (empty if it does not exist)."""
        base = self._inside(relative)
        if not base.is_dir():
            return {}
        return {str(path.relative_to(base)): path.read_bytes() for path in sorted(base.rglob("*"))
                if path.is_file() and not path.name.startswith(".")}

    def clear(self, relative: str) -> None:
        """Remove the run directory ``relative`` (a partial run that cannot resume starts over)."""
        base = self._inside(relative)
        if base.is_dir():
            shutil.rmtree(base)

    def _inside(self, *parts: str) -> Path:
        path = (self.root.joinpath(*parts)).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"{'/'.join(parts)} lies outside the study directory {self.root}")
        return path


class FileSync:
    """A task's working copy of a run away from the study directory, kept in step with the store."""

    def __init__(self, store: Any, relative: str, local: Path, interval: float) -> None:
        self.store, self.relative, self.local, self.interval = store, relative, local, interval
        self.sent: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def pull(self) -> None:
        """Replace the local copy by the store's files (the latest that reached the driver)."""
        ray = require_ray()
        files = ray.get(self.store.get_files.remote(self.relative))
        if self.local.exists():
            shutil.rmtree(self.local)
        self.local.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            target = self.local / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            stat = target.stat()
            self.sent[name] = (stat.st_mtime_ns, stat.st_size)

    def push(self) -> None:
        """Send every file that changed since the last push (checkpoint read first, so the metrics sent
        with it are at least as recent)."""
        ray = require_ray()
        with self._lock:
            if not self.local.is_dir():
                return
            paths = sorted((p for p in self.local.rglob("*") if p.is_file() and not p.name.startswith(".")),
                           key=lambda p: not str(p.relative_to(self.local)).startswith("checkpoint/"))
            changed: dict[str, bytes] = {}
            stamps = {}
            for path in paths:
                name = str(path.relative_to(self.local))
                try:
                    stat = path.stat()
                    stamp = (stat.st_mtime_ns, stat.st_size)
                    if self.sent.get(name) == stamp:
                        continue
                    changed[name] = path.read_bytes()
                except FileNotFoundError:  # replaced between listing and reading: the next push sends it
                    continue
                stamps[name] = stamp
            if changed:
                ray.get(self.store.put_files.remote(self.relative, changed))
                self.sent.update(stamps)

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.interval):
                self.push()

        self._thread = threading.Thread(target=loop, name="metarl-study-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.push()


def store_name(study_dir: str | os.PathLike[str]) -> str:
    """The name of the :class:`RunStore` actor of a study directory (one per directory and cluster)."""
    digest = hashlib.sha256(str(Path(study_dir).resolve()).encode()).hexdigest()[:16]
    return STORE_PREFIX + digest
