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
and only after that :meth:`RunDir.write_config` and :class:`MetricsLogger`
write anything. Every file is replaced atomically.

Policies are stored by one convention that every method shares, so that
``evaluate`` and ``render`` rebuild any run's policy: ``config.json["policy"]``
holds :func:`policy_config` (sizes, hidden layers, initial std) and the
checkpoint holds the weights as ``policy.<parameter name>`` tensors with
``family``, ``obs_dim`` and ``act_dim`` in its metadata (:func:`load_policy`).

On ``--resume`` only the fields in :data:`RESUME_MAY_CHANGE` may differ from
the stored config (extend ``iterations``, move to another ``device`` or ``sampler``), and
:func:`check_resume` refuses a resume that would go backwards (fewer
iterations than the checkpoint holds) or skip (a checkpoint ahead of
``metrics.csv``) and one whose checkpoint is gone.

One writer at a time: :func:`run_dir_lock` holds an exclusive lock on the
directory (``.metarl.lock``, an ``fcntl`` lock through the ``filelock``
package, released by the kernel when the process ends, so the lock of a
killed process never blocks the next one) while a command writes it, with the
holder's PID in ``.metarl.lock.pid`` for the message another writer gets.
:func:`writing_run` combines the lock with :func:`check_run_dir` for the
trainers, and removes a new run that failed before its first checkpoint, so
an error (a full disk, say) leaves no half-written directory behind.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import filelock
import numpy as np
import torch

import metarl_envs as envs
from metarl.core.policy import DEFAULT_NONLINEARITY, DEFAULT_WEIGHT_INIT, GaussianMLPPolicy
from metarl.core.sampler import env_dims
from metarl.core.validation import check_memory, check_number, step_bytes
from metarl.storage.checkpoint import atomic_write_text, check_compatible, load_checkpoint

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
_LOCK_FILES = (LOCK_NAME, LOCK_PID_NAME)
_PID_WAIT_S = 1.0  # how long a refused writer waits for the holder to write its PID


class RunDirError(ValueError):
    """A run directory that cannot be used for the requested run."""


class RunDirLockedError(RunDirError):
    """Another process holds the run directory's writer lock."""


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
        if entry.name in _LOCK_FILES:
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
    if run_dir.path.is_dir() and any(entry.name not in _LOCK_FILES for entry in run_dir.path.iterdir()):
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


POLICY_PREFIX = "policy."


def policy_config(policy: GaussianMLPPolicy, init_std: float) -> dict[str, Any]:
    """What ``config.json["policy"]`` stores to rebuild ``policy``."""
    return {
        "obs_dim": policy.obs_dim,
        "act_dim": policy.act_dim,
        "hidden_sizes": list(policy.hidden_sizes),
        "init_std": float(init_std),
        "nonlinearity": policy.nonlinearity,
        "weight_init": policy.weight_init,
    }


def policy_tensors(policy: GaussianMLPPolicy) -> dict[str, torch.Tensor]:
    """The policy's weights under the checkpoint names ``policy.<name>``."""
    return {POLICY_PREFIX + name: value.detach() for name, value in policy.named_parameters()}


def build_policy(config: Mapping[str, Any]) -> GaussianMLPPolicy:
    """A freshly initialised policy of the architecture in ``config["policy"]``."""
    spec = config.get("policy")
    if not isinstance(spec, Mapping):
        raise RunDirError("config.json lacks the 'policy' block (obs_dim, act_dim, hidden_sizes, init_std)")
    try:
        sizes = [spec["obs_dim"], spec["act_dim"], *spec["hidden_sizes"]]
        if not all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 1_000_000 for n in sizes):
            raise ValueError(f"obs_dim, act_dim and hidden_sizes must be integers in [1, 1000000], got {sizes}")
        init_std = check_number("policy.init_std", spec["init_std"], 0, low_open=True)
        return GaussianMLPPolicy(
            spec["obs_dim"], spec["act_dim"], tuple(spec["hidden_sizes"]), init_std,
            str(spec.get("nonlinearity", DEFAULT_NONLINEARITY)), str(spec.get("weight_init", DEFAULT_WEIGHT_INIT)),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise RunDirError(f"config.json's 'policy' block is invalid ({type(error).__name__}: {error}); it needs "
                          "obs_dim, act_dim, hidden_sizes and init_std") from None


def load_policy_weights(policy: GaussianMLPPolicy, tensors: Mapping[str, torch.Tensor], where: Any = "") -> None:
    """Copy ``policy.<name>`` tensors into ``policy`` (shapes checked, clear error otherwise)."""
    for name, parameter in policy.named_parameters():
        key = POLICY_PREFIX + name
        if key not in tensors:
            raise RunDirError(f"checkpoint {where} lacks the policy tensor {key!r}")
        if tuple(tensors[key].shape) != tuple(parameter.shape):
            raise RunDirError(
                f"checkpoint {where} holds {key} with shape {tuple(tensors[key].shape)}, but the run's policy "
                f"needs {tuple(parameter.shape)}; the checkpoint belongs to another run"
            )
        with torch.no_grad():
            parameter.copy_(tensors[key].to(parameter.dtype))


def load_policy(run_dir: RunDir, config: Mapping[str, Any] | None = None) -> GaussianMLPPolicy:
    """The policy of a run, from ``config.json`` and ``checkpoint/latest.safetensors`` (on CPU).

    Raises:
        FileNotFoundError: no config or no checkpoint.
        CheckpointError: a corrupted or truncated checkpoint, or one of another env.
    """
    config = run_dir.read_config() if config is None else config
    policy = build_policy(config)
    tensors, metadata = load_checkpoint(run_dir.checkpoint_path)
    check_compatible(metadata, config["family"], policy.obs_dim, policy.act_dim, run_dir.checkpoint_path)
    load_policy_weights(policy, tensors, run_dir.checkpoint_path)
    return policy


@dataclasses.dataclass
class IterationState:
    """What changes between training iterations besides the weights (checkpointed with them).

    Shared by the trainers that sample tasks and episodes (MAML, pretrain);
    each derives its two random streams from the run seed with its own
    stream numbers.
    """

    iteration: int
    task_rng: np.random.Generator
    sampling_generator: torch.Generator
    env_steps: int = 0
    train_seconds: float = 0.0

    @classmethod
    def fresh(cls, seed: int, task_stream: int, sampling_stream: int) -> IterationState:
        """The state before the first iteration of a run with ``seed``."""
        sampling_seed = int(np.random.SeedSequence([seed, sampling_stream]).generate_state(1)[0])
        return cls(
            iteration=0,
            task_rng=np.random.default_rng([seed, task_stream]),
            sampling_generator=torch.Generator().manual_seed(sampling_seed),
        )


ENV_BYTES = 64 * 1024  # one sub-env's simulator state, generously


def check_batch_memory(run_config: Any, allow_large: bool = False, batches: int | None = None) -> None:
    """Refuse a MAML/pretrain meta-batch that would need more than half the machine's memory.

    ``run_config`` is a :class:`metarl.algorithms.presets.MAMLRunConfig`; ``batches`` is how many
    batches of ``meta_batch_size x episodes_per_task`` episodes an iteration keeps
    (default: MAML's ``inner_steps + 1``). Raises ``ValueError`` naming the flags,
    the estimate and ``--allow-large`` (:func:`metarl.core.validation.check_memory`).
    """
    obs_dim, act_dim = env_dims(run_config.family)
    horizon = run_config.horizon if run_config.horizon is not None else envs.family_spec(run_config.family).horizon
    batches = run_config.maml.inner_steps + 1 if batches is None else batches
    episodes = run_config.meta_batch_size * run_config.episodes_per_task
    estimate = (episodes * horizon * batches * step_bytes(obs_dim, act_dim, tuple(run_config.hidden_sizes))
                + episodes * ENV_BYTES)
    check_memory(
        "one meta-batch", estimate,
        f"--meta-batch-size {run_config.meta_batch_size} x --episodes-per-task {run_config.episodes_per_task} x "
        f"--horizon {horizon} x {batches} batches", allow_large,
    )


def gradient_run_document(
    run_config: Any, method: str, seed: int, device: str, preset: str | None
) -> dict[str, Any]:
    """``config.json`` of a run whose policy adapts by gradient steps (MAML, pretrain).

    ``run_config`` is a :class:`metarl.algorithms.presets.MAMLRunConfig`: its fields, plus
    the method, seed, device, preset and the policy block.
    """
    obs_dim, act_dim = env_dims(run_config.family)
    probe = GaussianMLPPolicy(obs_dim, act_dim, run_config.hidden_sizes, run_config.init_std,
                              run_config.nonlinearity, run_config.weight_init)
    return {
        "method": method,
        "preset": preset,
        "seed": seed,
        "device": device,
        **run_config.to_dict(),
        "policy": policy_config(probe, run_config.init_std),
    }
