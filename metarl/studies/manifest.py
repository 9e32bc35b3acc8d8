"""The study's manifest, ``DIR/manifest.json``: the expanded grid, each run's status, node, seed,
attempts and wall time, the sessions of ``metarl study run`` that worked on it, and the package versions.

A session is one ``metarl study run`` that had runs to do: when it started, how many runs it had to do,
the CPUs each run held, when it last wrote the manifest (it rewrites it about every second while runs
go, so a session killed outright, by SIGKILL or a machine that stopped, is known to have ended within
seconds of that time), and, if it ended by itself, when and how (``finished``, ``stopped`` by Ctrl-C or
SIGTERM, or ``error``)."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metarl.core.errors import UserError
from metarl.storage.checkpoint import atomic_write_text

if TYPE_CHECKING:
    from metarl.studies.plan import RunPlan
    from metarl.studies.spec import StudySpec

MANIFEST = "manifest.json"
PACKAGES: tuple[str, ...] = ("metarl", "torch", "numpy", "gymnasium", "mujoco", "stable-baselines3", "ray")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class Manifest:
    """``DIR/manifest.json``: the grid, each run's status and history, the package versions."""

    def __init__(self, study_dir: Path, spec: StudySpec, plans: list[RunPlan]) -> None:
        self.path = study_dir / MANIFEST
        previous = json.loads(self.path.read_text()) if self.path.is_file() else {}
        if previous and previous.get("study") != spec.name:
            raise UserError(f"{study_dir} holds the study {previous.get('study')!r}, not {spec.name!r}; "
                            "choose another --out directory")
        old_runs = {run["key"]: run for run in previous.get("runs", [])}
        self.document: dict[str, Any] = {
            "study": spec.name,
            "source": spec.source,
            "description": spec.description,
            "families": list(spec.families),
            "methods": {m.name: {"train": m.train, "options": dict(m.options), "like": m.like}
                        for m in spec.methods},
            "seeds": list(spec.seeds),
            "evaluation": dataclasses.asdict(spec.evaluation),
            "family_evaluation": {f: dataclasses.asdict(e) for f, e in spec.family_evaluation},
            "versions": package_versions(),
            "sessions": previous.get("sessions", []),
            "runs": [],
        }
        for plan in plans:
            old = old_runs.get(plan.key, {})
            self.document["runs"].append({
                "key": plan.key, "family": plan.family, "method": plan.method, "seed": plan.seed,
                "path": plan.path, "train": f"metarl train {plan.train}",
                "train_argv": list(plan.train_argv(Path("DIR"), resume=False)),
                "splits": list(plan.evaluation.splits),
                "status": old.get("status", "waiting"), "node": old.get("node"),
                "attempts": old.get("attempts", 0), "wall_seconds": old.get("wall_seconds", 0.0),
                "error": old.get("error"),
            })
        self.runs = {run["key"]: run for run in self.document["runs"]}
        self.session: dict[str, Any] | None = None  # this process's session, once it has runs to do
        # attempts and wall time of earlier sessions, to which this session's are added
        self.before = {key: (run["attempts"], run["wall_seconds"]) for key, run in self.runs.items()}

    def update(self, key: str, **values: Any) -> None:
        self.runs[key].update(values)

    def start_session(self, runs: int, cpus_per_run: float) -> None:
        """Record a new session of the study runner, with ``runs`` runs to do (see the module docstring)."""
        now = _now()
        self.session = {"started": now, "runs": runs, "cpus_per_run": cpus_per_run, "last_written": now,
                        "ended": None, "outcome": "running"}
        self.document["sessions"].append(self.session)

    def end_session(self, outcome: str) -> None:
        """Mark this process's session ended, with ``outcome`` (finished, stopped or error)."""
        if self.session is not None and self.session["ended"] is None:
            self.session["ended"] = _now()
            self.session["outcome"] = outcome

    def write(self) -> None:
        now = _now()
        self.document["updated"] = now
        if self.session is not None and self.session["ended"] is None:
            self.session["last_written"] = now
        atomic_write_text(self.path, json.dumps(self.document, indent=2) + "\n")
