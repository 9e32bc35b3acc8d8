"""``metarl study run FILE --out DIR``: train and evaluate every run of a study on Ray.

FILE is a TOML file or the name of a shipped study (tiny, maml-paper,
unseen-dynamics). Every (family, method, seed) is one Ray task, on a local Ray
instance or on the cluster at ``--address``; rerunning the command continues
the study. See :mod:`metarl.studies.runner` and docs/studies.md.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import tyro

from metarl.core.flags import OffSwitch, optional, parse


@dataclasses.dataclass(frozen=True)
class StudyRunArgs:
    """Train and evaluate every run of a study on Ray; rerun the same command to continue it."""

    study: tyro.conf.Positional[Annotated[str, tyro.conf.arg(metavar="STUDY")]]
    """The study: a TOML file, or the name of a shipped study (tiny, maml-paper, unseen-dynamics)."""
    out: Path
    """Study directory: runs/<family>/<method>/seed<seed>/, manifest.json, study.toml."""
    address: Annotated[str | None, optional("HOST:PORT", "start a Ray instance on this machine only (loopback)")] = None
    """Address of a running Ray cluster (the head's HOST:PORT printed by `ray start --head`, or auto)."""
    cpus_per_run: float = 1.0
    """CPUs Ray reserves for each run (runs in parallel = cluster CPUs / this)."""
    gpus_per_run: float = 0.0
    """GPUs Ray reserves for each run (give the runs --device cuda in the study file to use them)."""
    max_retries: int = 3
    """Retries of a run whose worker dies or that fails unexpectedly; each resumes from its last checkpoint."""
    num_cpus: Annotated[int | None, optional("INT", "all of this machine's")] = None
    """CPUs of the local Ray instance; not with --address."""
    worker_dir: Annotated[str | None, optional("PATH", "tasks on this machine work in --out directly, others in a temporary folder")] = None
    """Where tasks keep their working copy of a run. Given: every task works there and sends its files
    to --out as they are written (what happens on nodes that do not share --out's filesystem)."""
    only: Annotated[tuple[str, ...], tyro.conf.arg(metavar="PATTERN", help_behavior_hint="(default: every run)")] = ()
    """Run only these runs, each a family, family/method, */method or family/method/seedN (shell patterns,
    e.g. HalfCheetahCrippled or '*/maml-trpo'); the others are left as they are."""
    no_progress: OffSwitch = False
    """Do not print the progress line."""


def main(argv: list[str]) -> int:
    args = parse(StudyRunArgs, argv, prog="metarl study run")
    from metarl.cluster.ray_support import require_ray

    require_ray()  # says what to install before anything else
    from metarl.studies.runner import RunOptions, run_study
    from metarl.studies.spec import load_study

    spec = load_study(args.study)
    options = RunOptions(
        address=args.address, cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
        max_retries=args.max_retries, progress=not args.no_progress, num_cpus=args.num_cpus,
        worker_dir=args.worker_dir, only=args.only,
    )
    result = run_study(spec, args.out, options)
    if result.failed:
        for key, error in result.failed.items():
            print(f"failed: {key}: {error}")
        print(f"{len(result.failed)} run(s) failed; fix the cause and rerun the same command to retry them")
        return 1
    which = "every selected run" if args.only else "every run"
    print(f"study {spec.name}: {which} finished; report it with `metarl study report {args.out}`")
    return 0
