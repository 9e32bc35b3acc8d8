"""Run directories (docs/design.md, "Run files"): config, checkpoints, metrics and TensorBoard events.

A run directory holds:

- ``config.json``: ``"method"`` (``maml``, ``pretrain``, ...), ``"family"`` and
  everything else needed to rebuild the run (the trainer's full configuration);
- ``checkpoint/latest.safetensors`` (+ ``latest.json``), see :mod:`metarl.storage.checkpoint`;
- ``metrics.csv``: one row per iteration, column ``iteration`` first, then the
  metric keys (namespaces ``train/``, ``adapt/``, ``loss/``, ``time/``);
- ``tensorboard/``: the same metrics as TensorBoard events;
- files written later by ``evaluate`` (``eval_<split>.json``) and ``render``.

Opening a directory is two steps so that bad input never leaves it
half-written: :func:`check_run_dir` only reads and raises :class:`RunDirError`
(a directory holding a *different* run, a non-empty directory that is not a
run, ``--resume`` without a run); the trainer then validates its checkpoint,
and only after that :meth:`RunDir.write_config` and :class:`~metarl.storage.metrics.MetricsLogger`
write anything. Every file is replaced atomically.

Policies are stored by one convention that every method shares, so that
``evaluate`` and ``render`` rebuild any run's policy: ``config.json["policy"]``
holds :func:`~metarl.storage.policy_store.policy_config` (sizes, hidden layers, initial std) and the
checkpoint holds the weights as ``policy.<parameter name>`` tensors with
``family``, ``obs_dim`` and ``act_dim`` in its metadata (:mod:`metarl.storage.policy_store`).

On ``--resume`` only the fields in :data:`RESUME_MAY_CHANGE` may differ from
the stored config (extend ``iterations``, move to another ``device`` or ``sampler``), and
:func:`~metarl.storage.metrics.check_resume` refuses a resume that would go backwards (fewer
iterations than the checkpoint holds) or skip (a checkpoint ahead of
``metrics.csv``) and one whose checkpoint is gone.

One writer at a time: :mod:`metarl.storage.lock` holds an exclusive lock on the
directory while a command writes it (``.metarl.lock``, with the holder's PID in
``.metarl.lock.pid``), and opens a run for the trainers
(:func:`~metarl.storage.lock.writing_run`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metarl.core.policy import DEFAULT_NONLINEARITY, DEFAULT_WEIGHT_INIT
from metarl.storage.checkpoint import atomic_write_text

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.csv"
CHECKPOINT_DIR = "checkpoint"
TENSORBOARD_DIR = "tensorboard"
LATEST_CHECKPOINT = "latest.safetensors"
# Top-level config keys that --resume may change.
RESUME_MAY_CHANGE: tuple[str, ...] = ("iterations", "device", "sampler")
ADDED_FIELD_DEFAULTS: dict[str, Any] = {
    "nonlinearity": DEFAULT_NONLINEARITY, "policy.nonlinearity": DEFAULT_NONLINEARITY,
    "weight_init": DEFAULT_WEIGHT_INIT, "policy.weight_init": DEFAULT_WEIGHT_INIT,
    "adaptation.normalize_advantages": True,
}
"""Config fields added after runs were already being written, with the value a run that lacks
them was trained with: a stored config without the field still matches a new one with that value."""

LOCK_NAME = ".metarl.lock"
LOCK_PID_NAME = ".metarl.lock.pid"
LOCK_FILES = (LOCK_NAME, LOCK_PID_NAME)


class RunDirError(ValueError):
    """A run directory that cannot be used for the requested run."""


class RunDirLockedError(RunDirError):
    """Another process holds the run directory's writer lock."""


def _normalise(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(config, sort_keys=True))


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            name = f"{prefix}{key}"
            if key not in old or key not in new:
                out.append(name)
            else:
                out.extend(_differences(old[key], new[key], name + "."))
        return out
    return [] if old == new else [prefix.rstrip(".")]


class RunDir:
    """Paths and small readers/writers of one run directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_NAME

    @property
    def checkpoint_path(self) -> Path:
        """The latest checkpoint: ``checkpoint/latest.safetensors``."""
        return self.path / CHECKPOINT_DIR / LATEST_CHECKPOINT

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD_DIR

    def eval_path(self, split: str) -> Path:
        """Where ``metarl evaluate --split split`` writes its results."""
        return self.path / f"eval_{split}.json"

    def read_config(self) -> dict[str, Any]:
        """The run's ``config.json``.

        Raises:
            FileNotFoundError: when the directory holds no run.
            RunDirError: when ``config.json`` is unreadable or lacks ``method``/``family``.
        """
        if not self.config_path.is_file():
            raise FileNotFoundError(
                f"{self.path} is not a metarl run directory (no {CONFIG_NAME}); "
                "create one with `metarl train ...`"
            )
        try:
            config = json.loads(self.config_path.read_text())
        except (ValueError, UnicodeDecodeError) as error:
            raise RunDirError(f"{self.config_path} is not valid JSON ({error}); the run cannot be read") from None
        if not isinstance(config, dict) or "method" not in config or "family" not in config:
            raise RunDirError(f"{self.config_path} must hold an object with 'method' and 'family'")
        return config

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Create the directory if needed and write ``config.json`` atomically."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, json.dumps(_normalise(config), indent=2, sort_keys=True) + "\n")

    def write_json(self, name: str, document: Mapping[str, Any]) -> Path:
        """Write ``document`` as ``name`` inside the run directory, atomically."""
        target = self.path / name
        atomic_write_text(target, json.dumps(document, indent=2) + "\n")
        return target


def check_run_dir(path: str | os.PathLike[str], config: Mapping[str, Any], resume: bool) -> RunDir:
    """Check that ``path`` can hold the run ``config``; write nothing.

    A new run needs a missing or empty directory. An existing run is accepted
    only with ``resume=True`` and the same configuration (up to
    :data:`RESUME_MAY_CHANGE`).

    Raises:
        RunDirError: with one sentence saying what is wrong and what to do.
    """
    run_dir = RunDir(path)
    if run_dir.path.exists() and not run_dir.path.is_dir():
        raise RunDirError(f"--out {run_dir.path} is a file, not a directory; choose a directory path")
    if run_dir.config_path.exists():
        old = run_dir.read_config()
        new = _normalise(config)
        changed = [
            key for key in _differences(old, new)
            if key.split(".")[0] not in RESUME_MAY_CHANGE and not _implied_by_older_version(old, new, key)
        ]
        if changed:
            shown = ", ".join(
                f"{key}: {_lookup(old, key)!r} -> {_lookup(new, key)!r}" for key in changed[:6]
            )
            raise RunDirError(
                f"{run_dir.path} already holds a different run (method {old.get('method')!r}, family "
                f"{old.get('family')!r}; differs in {shown}); choose another --out directory, or repeat "
                "the original settings with --resume to continue it"
            )
        if not resume:
            raise RunDirError(
                f"{run_dir.path} already holds this run; pass --resume (resume=True from Python) to continue "
                "it or choose another --out directory"
            )
        return run_dir
    if resume:
        raise RunDirError(f"--resume was given but {run_dir.path} holds no run (no {CONFIG_NAME})")
    if run_dir.path.is_dir() and any(entry.name not in LOCK_FILES for entry in run_dir.path.iterdir()):
        raise RunDirError(
            f"{run_dir.path} is not empty and holds no metarl run (no {CONFIG_NAME}); choose a new or "
            "empty --out directory"
        )
    return run_dir


_ABSENT = "<absent>"


def _implied_by_older_version(old: Mapping[str, Any], new: Mapping[str, Any], key: str) -> bool:
    """True if ``key`` is absent from ``old`` and ``new`` holds the value older versions implied."""
    return (key in ADDED_FIELD_DEFAULTS and _lookup(old, key) == _ABSENT
            and _lookup(new, key) == ADDED_FIELD_DEFAULTS[key])


def _lookup(config: Mapping[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _ABSENT
        value = value[part]
    return value
