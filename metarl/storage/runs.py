"""Run directories, one import for all of it (docs/design.md, "Run files").

The storage of a run lives in modules by concept; this module gathers their public names
so that ``from metarl.storage.runs import ...`` keeps working:

- :mod:`metarl.storage.run_dir`: the directory's files, :class:`RunDir`, :func:`check_run_dir`
  and the errors;
- :mod:`metarl.storage.lock`: the writer lock (:func:`run_dir_lock`) and :func:`writing_run`;
- :mod:`metarl.storage.metrics`: ``metrics.csv`` (:class:`MetricsLogger`, :func:`read_metrics`,
  :func:`check_resume`);
- :mod:`metarl.storage.policy_store`: how policies are stored and rebuilt (:func:`load_policy`);
- :mod:`metarl.storage.iteration_state`: a sampling trainer's :class:`IterationState` and
  :func:`check_batch_memory`.
"""

from __future__ import annotations

from metarl.storage.iteration_state import ENV_BYTES, IterationState, check_batch_memory
from metarl.storage.lock import run_dir_lock, writing_run
from metarl.storage.metrics import MetricsLogger, check_resume, read_metrics
from metarl.storage.policy_store import (
    POLICY_PREFIX,
    build_policy,
    checkpoint_progress,
    gradient_run_document,
    load_policy,
    load_policy_weights,
    policy_config,
    policy_tensors,
)
from metarl.storage.run_dir import (
    ADDED_FIELD_DEFAULTS,
    CHECKPOINT_DIR,
    CONFIG_NAME,
    LATEST_CHECKPOINT,
    LOCK_NAME,
    LOCK_PID_NAME,
    METRICS_NAME,
    RESUME_MAY_CHANGE,
    TENSORBOARD_DIR,
    RunDir,
    RunDirError,
    RunDirLockedError,
    check_run_dir,
)

__all__ = [
    "ADDED_FIELD_DEFAULTS", "CHECKPOINT_DIR", "CONFIG_NAME", "ENV_BYTES", "LATEST_CHECKPOINT", "LOCK_NAME",
    "LOCK_PID_NAME", "METRICS_NAME", "POLICY_PREFIX", "RESUME_MAY_CHANGE", "TENSORBOARD_DIR", "IterationState",
    "MetricsLogger", "RunDir", "RunDirError", "RunDirLockedError", "build_policy", "check_batch_memory",
    "check_resume", "checkpoint_progress", "check_run_dir", "gradient_run_document", "load_policy", "load_policy_weights",
    "policy_config", "policy_tensors", "read_metrics", "run_dir_lock", "writing_run",
]
