"""``metarl study run``: every run of a study as a Ray task (docs/design.md, "Studies and scale-out on Ray").

One run (train, then evaluate each split) is one Ray core task with the
resources ``--cpus-per-run``/``--gpus-per-run`` and ``max_retries``: Ray
schedules the tasks over the cluster's nodes, retries a task whose worker or
node dies (and one that raised an unexpected error), and ``ray.cancel``
interrupts a running one. A task calls the ``main`` of ``metarl train <cmd>``
and ``metarl evaluate`` in-process, with ``--resume`` when the run directory
already holds the run, so a retry continues from the last checkpoint and the
directories are exactly what those commands write. Errors a retry cannot fix
(a directory of another run, bad flags) end the run as failed without retries.

Files reach the study directory through :class:`~metarl.studies.store.RunStore`, an actor pinned to
the driver's node that writes into the study directory there. A task that runs
on the driver's node works in the study directory itself; one on another node
(or every task, with ``worker_dir``) works in a local copy: it first writes the
run's files as the store has them (so a retry on any node resumes from the last
checkpoint that reached the driver), and a thread sends every file that changed
to the store every ``sync_seconds`` and once more when the task ends (also
when it is interrupted). The store also counts attempts and records each run's
node, which the progress line and the manifest show.

The manifest (``DIR/manifest.json``, :mod:`metarl.studies.manifest`) holds the expanded grid, each run's
status, node, seed, attempts and wall time, and the package versions.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from metarl.cluster.ray_support import init_ray, require_ray
from metarl.core.errors import UserError
from metarl.core.interrupts import sigterm_as_interrupt
from metarl.evaluation.results import record_evaluated_checkpoint
from metarl.methods import dispatch
from metarl.storage.checkpoint import atomic_write_text
from metarl.storage.runs import RunDir, RunDirError, RunDirLockedError, run_dir_lock
from metarl.studies.manifest import Manifest
from metarl.studies.plan import RunPlan, run_state
from metarl.studies.spec import StudySpec
from metarl.studies.store import FileSync, RunStore, store_name

STUDY_FILE = "study.toml"
# Exceptions a retry cannot fix: the run is reported as failed at once.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, FileNotFoundError, FileExistsError,
                                                      SystemExit)


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How ``metarl study run`` runs the grid."""

    address: str | None = None
    """Ray cluster to use; None starts a local instance on this machine."""
    cpus_per_run: float = 1.0
    """CPUs Ray reserves for each run."""
    gpus_per_run: float = 0.0
    """GPUs Ray reserves for each run."""
    max_retries: int = 3
    """Retries of a run whose worker dies or that fails unexpectedly (each resumes from its checkpoint)."""
    progress: bool = True
    """Print the progress line."""
    num_cpus: int | None = None
    """CPUs of the local Ray instance (default: this machine's)."""
    worker_dir: str | None = None
    """Where tasks keep their working copy of a run: given, every task works there (even on the driver's
    node) and sends its files to the study directory; None: tasks on the driver's node work in the study
    directory, others in a temporary folder."""
    sync_seconds: float = 2.0
    """How often a task away from the study directory sends its changed files."""
    progress_seconds: float = 10.0
    """How often the progress line is printed."""
    only: tuple[str, ...] = ()
    """Run only the runs whose key (``family/method/seedN``) matches one of these shell patterns, or
    starts with one of them followed by ``/`` (``HalfCheetahCrippled``, ``*/maml-trpo``); empty: every run."""

    def __post_init__(self) -> None:
        if not self.cpus_per_run > 0:
            raise UserError(f"--cpus-per-run must be > 0, got {self.cpus_per_run}")
        if not self.gpus_per_run >= 0:
            raise UserError(f"--gpus-per-run must be >= 0, got {self.gpus_per_run}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise UserError(f"--max-retries must be a non-negative integer, got {self.max_retries!r}")
        if isinstance(self.only, str) or not all(isinstance(pattern, str) and pattern for pattern in self.only):
            raise UserError(f"only must be a tuple of non-empty patterns (--only PATTERN ...), got {self.only!r}")
        if not self.sync_seconds > 0 or not self.progress_seconds > 0:
            raise UserError("sync_seconds and progress_seconds must be > 0")


# ---------------------------------------------------------------------------------------------
# One run: the body of the Ray task
# ---------------------------------------------------------------------------------------------


def _interruptible() -> None:
    """Let a stop reach this task: restore Python's SIGINT handler if it is ignored.

    Ray stops a running task (``ray.cancel``) by interrupting its main thread as
    SIGINT does. A process started in the background by a non-interactive shell
    (``nohup metarl study run ... &``) has SIGINT ignored, and Ray's workers inherit
    that, so the stop would never arrive and the run would train on to the end.
    """
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def execute_run(plan: RunPlan, context: Mapping[str, Any], *dependencies: Any) -> dict[str, Any]:
    """Train (or resume) and evaluate one run; the body of its Ray task.

    ``context``: ``study_dir``, ``worker_dir`` (or None), ``driver_node`` (node id), ``store`` (the
    :class:`RunStore` handle) and ``sync_seconds``. ``dependencies`` are the results of the runs this
    one needs first (a random-init run's ``like`` run): Ray passes them once those tasks finished.

    Returns ``{"status": "done"|"failed", ...}``; errors a retry cannot fix are returned as ``failed``,
    other exceptions propagate so that Ray retries the task.
    """
    ray = require_ray()
    _interruptible()
    runtime = ray.get_runtime_context()
    node_id = runtime.get_node_id()
    store = context["store"]
    node_ip = ray.util.get_node_ip_address()
    attempt = ray.get(store.begin.remote(plan.key, node_id, node_ip, os.getpid()))
    start = time.time()
    local = context["worker_dir"] is None and node_id == context["driver_node"]
    if local:
        root = Path(context["study_dir"])
    else:
        base = context["worker_dir"] or os.path.join(tempfile.gettempdir(), "metarl-study")
        root = Path(base) / store_name(context["study_dir"])
    syncs = []
    if not local:
        syncs = [FileSync(store, plan.path, root / plan.path, context["sync_seconds"])]
        if plan.like is not None:
            FileSync(store, plan.like, root / plan.like, context["sync_seconds"]).pull()
        syncs[0].pull()
        syncs[0].start()
    status = "failed"
    try:
        _train_and_evaluate(plan, root, store if not local else None)
        status = "done"
        return {"status": "done", "key": plan.key, "node_id": node_id, "node_ip": node_ip, "attempt": attempt,
                "seconds": time.time() - start}
    except PERMANENT_ERRORS as error:
        return {"status": "failed", "key": plan.key, "node_id": node_id, "node_ip": node_ip, "attempt": attempt,
                "seconds": time.time() - start, "error": f"{type(error).__name__}: {error}"}
    except KeyboardInterrupt:
        status = "stopped"
        raise
    except BaseException:
        status = "error (retried)"
        raise
    finally:
        for sync in syncs:
            sync.stop()
        ray.get(store.end.remote(plan.key, status))
        if status == "done" and not local:  # every file reached the study directory
            shutil.rmtree(root / plan.path, ignore_errors=True)


def _train_and_evaluate(plan: RunPlan, root: Path, store: Any) -> None:
    run = RunDir(root / plan.path)
    state = run_state(root, plan)
    if not state.trained:
        resume = state.started and plan.can_resume(root)
        if state.started and not resume and plan.train != "random-init":
            # a partial run of a trainer without checkpoints (fine-tuning) starts over
            shutil.rmtree(run.path)
            if store is not None:
                require_ray().get(store.clear.remote(plan.path))
        if resume:  # a finished run extended (the study's iterations grew): its evaluations become stale
            record_evaluated_checkpoint(run.path)
        dispatch.train(plan.train, plan.train_argv(root, resume))  # as `metarl train <train> ...`
        # evaluations of the run before this training (a study whose iterations grew) are stale
        state = dataclasses.replace(state, evaluated=())
    for split in plan.evaluation.splits:
        if split not in state.evaluated:  # as `metarl evaluate RUN_DIR <plan.evaluation.argv(split)>`
            dispatch.evaluate_run(run.path, plan.evaluation.options(split), progress=False)


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class StudyResult:
    """What :func:`run_study` did."""

    done: list[str]
    failed: dict[str, str]
    skipped: list[str]
    stopped: list[str]
    manifest: Path


def select_runs(plans: list[RunPlan], patterns: tuple[str, ...]) -> set[str]:
    """The keys of the runs that ``patterns`` select (:attr:`RunOptions.only`; all runs if empty), with
    every run that a selected run is made like (its initial weights come from that run).

    Raises:
        UserError: a pattern matches no run.
    """
    if not patterns:
        return {plan.key for plan in plans}

    def matches(key: str, pattern: str) -> bool:
        return fnmatch.fnmatchcase(key, pattern) or fnmatch.fnmatchcase(key, pattern.rstrip("/") + "/*")

    for pattern in patterns:
        if not any(matches(plan.key, pattern) for plan in plans):
            examples = ", ".join(sorted({plan.family for plan in plans}) + [f"*/{plans[0].method}", plans[0].key])
            raise UserError(f"--only {pattern!r} matches no run of the study; runs are named family/method/seedN "
                            f"and a pattern may name a family, a family/method, a method as */METHOD or a run, e.g. {examples}")
    chosen = {plan.key for plan in plans if any(matches(plan.key, pattern) for pattern in patterns)}
    while True:  # the run each chosen run is like, and the one that run is like ...
        needed = {plan.like_key for plan in plans if plan.key in chosen and plan.like_key is not None} - chosen
        if not needed:
            return chosen
        chosen |= needed


def _format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def run_study(spec: StudySpec, out: str | os.PathLike[str], options: RunOptions = RunOptions(),
              log: Callable[[str], None] | None = None) -> StudyResult:
    """Run every unfinished run of ``spec`` into the study directory ``out`` (see the module docstring).

    Raises:
        UserError: Ray is missing, or a run directory holds another configuration (nothing is started).
        KeyboardInterrupt: after Ctrl-C or SIGTERM, once every running run saved its checkpoint.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    ray = require_ray()
    study_dir = Path(out).resolve()
    plans = spec.plans()
    manifest = Manifest(study_dir, spec, plans)
    # Check every run directory before anything runs: refuse those of another configuration.
    states, refused = {}, []
    for plan in plans:
        try:
            states[plan.key] = run_state(study_dir, plan)
        except RunDirError as error:
            refused.append(str(error))
    if refused:
        raise UserError("refusing to run the study; " + " | ".join(refused))
    skipped = [plan.key for plan in plans if states[plan.key].done(plan)]
    adopted = [key for key in skipped if manifest.runs[key]["status"] != "done"]
    for key in adopted:
        manifest.update(key, status="done")
    chosen = select_runs(plans, options.only)
    todo = [plan for plan in plans if plan.key not in skipped and plan.key in chosen]
    result = StudyResult([], {}, skipped, [], manifest.path)
    if not todo:  # a finished study: write nothing unless the manifest lacked some finished runs
        if adopted or not manifest.path.is_file():
            study_dir.mkdir(parents=True, exist_ok=True)
            manifest.write()
        which = f"{len(chosen)} selected" if options.only else str(len(plans))
        log(f"study {spec.name}: all {which} runs are finished; nothing to do")
        return result
    if options.only:
        log(f"study {spec.name}: --only selects {len(chosen)} of {len(plans)} runs; the others are left as "
            "they are")
    # one `study run` per study directory at a time: each rewrites the whole manifest
    lock = run_dir_lock(study_dir)
    try:
        lock.__enter__()
    except RunDirLockedError as error:
        raise UserError(f"study directory {error}") from None
    try:
        return _run_todo(spec, study_dir, options, log, ray, manifest, todo, result)
    finally:
        lock.__exit__(None, None, None)


def _run_todo(spec: StudySpec, study_dir: Path, options: RunOptions, log: Callable[[str], None], ray: Any,
              manifest: Manifest, todo: list[RunPlan], result: StudyResult) -> StudyResult:
    """The runs of :func:`run_study` that are left to do, with the study directory's writer lock held; one
    session of the manifest, whose end and outcome are recorded however it ends."""
    if spec.text:
        atomic_write_text(study_dir / STUDY_FILE, spec.text)
    for plan in todo:
        manifest.update(plan.key, status="waiting", error=None)
    manifest.start_session(len(todo), options.cpus_per_run)
    manifest.write()
    try:
        result = _run_session(spec, study_dir, options, log, ray, manifest, todo, result)
    except KeyboardInterrupt:
        manifest.end_session("stopped")
        manifest.write()
        raise
    except BaseException:
        manifest.end_session("error")
        manifest.write()
        raise
    manifest.end_session("finished")
    manifest.write()
    return result


def _run_session(spec: StudySpec, study_dir: Path, options: RunOptions, log: Callable[[str], None], ray: Any,
                 manifest: Manifest, todo: list[RunPlan], result: StudyResult) -> StudyResult:
    """Start Ray, run ``todo`` on it and fold each run's outcome into ``manifest`` (one session)."""
    skipped = result.skipped

    init_ray(options.address, num_cpus=options.num_cpus)
    driver_node = ray.get_runtime_context().get_node_id()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    store = ray.remote(RunStore).options(
        name=store_name(study_dir), num_cpus=0, max_restarts=-1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=driver_node, soft=False),
    ).remote(str(study_dir))
    context = {"study_dir": str(study_dir), "worker_dir": options.worker_dir, "driver_node": driver_node,
               "store": store, "sync_seconds": options.sync_seconds}
    # max_calls=1: a fresh worker process per attempt (no state carried from one run into the next)
    task = ray.remote(max_calls=1)(execute_run).options(
        num_cpus=options.cpus_per_run, num_gpus=options.gpus_per_run, max_retries=options.max_retries,
        retry_exceptions=True,
    )
    refs: dict[Any, RunPlan] = {}
    by_key: dict[str, Any] = {}
    unsubmitted = list(todo)  # families, then methods in file order: a like run is submitted before its users
    pending: list[Any] = []

    def submit() -> None:
        """Hand Ray as many runs as the cluster has slots for now (recomputed as nodes join or leave).

        Ray releases a task's CPUs while it waits in ``ray.get`` (a run's brief calls to the store), and
        would start queued runs in that gap, so more runs than slots would share the CPUs; runs are
        therefore given to Ray only while fewer than the cluster's slots are in flight.
        """
        while unsubmitted and len(pending) < run_slots(ray.cluster_resources(), options):
            plan = unsubmitted.pop(0)
            dependencies = [by_key[plan.like_key]] if plan.like is not None and plan.like_key in by_key else []
            ref = task.remote(plan, context, *dependencies)
            refs[ref] = plan
            by_key[plan.key] = ref
            pending.append(ref)

    submit()
    log(f"study {spec.name}: {len(todo)} runs to do, {len(skipped)} finished already; "
        f"Ray resources {ray.cluster_resources()}")

    started_at = time.time()
    last_progress = 0.0
    with sigterm_as_interrupt():  # SIGTERM stops the study as Ctrl-C does (exit status 143)
        try:
            while pending:
                ready, pending[:] = ray.wait(pending, num_returns=1, timeout=1.0)
                for ref in ready:
                    _collect(ray, ref, refs[ref], result, manifest)
                submit()
                attempts = ray.get(store.status.remote())
                _update_attempts(manifest, attempts, [refs[r] for r in pending])
                manifest.write()
                if options.progress and (ready or time.time() - last_progress >= options.progress_seconds):
                    last_progress = time.time()
                    log(_progress_line(spec.name, manifest, [refs[r] for r in pending] + unsubmitted, result,
                                       started_at, options, ray))
        except KeyboardInterrupt:
            log(f"study {spec.name}: stopping; every running run saves its checkpoint")
            for ref in pending:
                ray.cancel(ref, force=False)
            for ref in pending:
                plan = refs[ref]
                try:
                    ray.get(ref, timeout=120)
                    _collect(ray, ref, plan, result, manifest)
                except Exception:  # cancelled: the run stopped (its checkpoint saved by the trainer)
                    result.stopped.append(plan.key)
                    manifest.update(plan.key, status="stopped")
            _update_attempts(manifest, ray.get(store.status.remote()), [])
            manifest.write()
            raise
        finally:
            ray.kill(store)  # its files are written; a later run of the study starts a new one
    log(f"study {spec.name}: {len(result.done)} runs done, {len(result.failed)} failed, "
        f"{len(skipped)} finished before; manifest {manifest.path}")
    return result


def _collect(ray: Any, ref: Any, plan: RunPlan, result: StudyResult, manifest: Manifest) -> None:
    try:
        outcome = ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        result.stopped.append(plan.key)
        manifest.update(plan.key, status="stopped")
        return
    except Exception as error:  # retries exhausted (worker died or an unexpected error each time)
        message = f"{type(error).__name__}: {error}"
        outcome = {"status": "failed", "error": message[-2000:]}
    if outcome["status"] == "done":
        result.done.append(plan.key)
        manifest.update(plan.key, status="done", error=None)
    else:
        result.failed[plan.key] = outcome["error"]
        manifest.update(plan.key, status="failed", error=outcome["error"])


def _update_attempts(manifest: Manifest, attempts: Mapping[str, list[dict[str, Any]]], pending: list[RunPlan]) -> None:
    """Fold the store's attempt records of this session into the manifest."""
    pending_keys = {plan.key for plan in pending}
    for key, history in attempts.items():
        run = manifest.runs[key]
        attempts_before, wall_before = manifest.before[key]
        latest = history[-1]
        run["attempts"] = attempts_before + len(history)
        run["node"] = f"{latest['node_ip']} {latest['node_id'][:12]}"
        run["wall_seconds"] = wall_before + sum((a["end"] or time.time()) - a["start"] for a in history)
        if key in pending_keys:
            run["status"] = "running" if latest["end"] is None else "waiting"


def run_slots(resources: Mapping[str, float], options: RunOptions) -> int:
    """How many runs the cluster's ``resources`` hold at once (at least 1)."""
    slots = int(resources.get("CPU", 0) // options.cpus_per_run)
    if options.gpus_per_run > 0:
        slots = min(slots, int(resources.get("GPU", 0) // options.gpus_per_run))
    return max(1, slots)


def _progress_line(name: str, manifest: Manifest, pending: list[RunPlan], result: StudyResult,
                   started_at: float, options: RunOptions, ray: Any) -> str:
    statuses = [manifest.runs[plan.key]["status"] for plan in pending]
    running = statuses.count("running")
    waiting = len(pending) - running
    done, failed = len(result.done), len(result.failed)
    eta = "unknown"
    if done:
        walls = [manifest.runs[key]["wall_seconds"] for key in result.done]
        slots = max(1, min(len(pending), run_slots(ray.cluster_resources(), options)))
        eta = _format_seconds(sum(walls) / len(walls) * len(pending) / slots)
    return (f"study {name}: {done} done, {running} running, {failed} failed, {waiting} waiting; "
            f"elapsed {_format_seconds(time.time() - started_at)}, ETA {eta}")
