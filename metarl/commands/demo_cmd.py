"""``metarl demo``: the main job on embedded defaults, in about a minute on 2 CPU cores.

1. Meta-trains a Gaussian MLP policy with MAML-TRPO on Point2DNav (the MAML
   paper's 2-D navigation) with the demo configuration :func:`demo_config`.
2. Evaluates it on 40 unseen goals (the test split) with the protocol of
   docs/design.md, "Evaluation protocol": return before adaptation (k = 0) and after k = 1..3
   policy-gradient steps of 20 episodes each; and, for reference, the same
   protocol from the untrained initial policy (random init).
3. Prints the k = 0..3 table beside the MAML paper's (Finn et al. 2017;
   ``metarl/data/maml_paper_returns.json``) and writes a plot of it.
4. Renders a video of the policy on one unseen goal before adaptation and
   after 1 and 3 steps (``demo_before_after.mp4``; ``--no-video`` skips it,
   and it is skipped with a message when rendering is unavailable).

The demo configuration is smaller than the paper's (fewer episodes per task and
iterations, narrower network) so that it finishes in about a minute; the
paper's configuration is ``metarl train maml --env Point2DNav --preset paper``
(see ``scripts/reproduce_maml.py``). Running the demo again with the same
``--out`` reuses the finished run and only re-evaluates.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch

from metarl.algorithms.maml.training import initial_policy, train_maml
from metarl.algorithms.presets import MAMLRunConfig, maml_preset
from metarl.core.device import DEVICE_CHOICES
from metarl.core.errors import UserError
from metarl.core.flags import OffSwitch, device_choice, parse
from metarl.evaluation.paper import paper_returns
from metarl.evaluation.protocol import (
    EvalOptions,
    evaluate_gradient_adaptation,
    returns_document,
    write_eval_json,
)
from metarl.storage.runs import RunDir, load_policy, run_dir_lock

FAMILY = "Point2DNav"
PLOT_NAME = "demo_returns.png"


def demo_config(iterations: int) -> MAMLRunConfig:
    """The demo's run: Point2DNav, 20 tasks x 10 episodes, hidden (64, 64), MAML-TRPO, inner lr 0.1."""
    return maml_preset("tiny", FAMILY).replace(
        iterations=iterations, meta_batch_size=20, episodes_per_task=10, hidden_sizes=(64, 64), checkpoint_every=5
    )


@dataclasses.dataclass(frozen=True)
class DemoArgs:
    """Meta-train MAML on Point2DNav, evaluate on unseen goals and compare with the MAML paper."""

    out: Path = Path("runs/demo")
    """Run directory (reused if it holds the demo run already)."""
    seed: int = 0
    """Run seed (policy initialisation, training tasks, sampling)."""
    device: Annotated[str, device_choice()] = "auto"
    """auto (CUDA if available), cpu or cuda."""
    iterations: int = 40
    """Meta-iterations of training."""
    threads: int = 1
    """CPU threads for torch."""
    no_progress: OffSwitch = False
    """Hide the progress bars."""
    no_video: OffSwitch = False
    """Skip the before/after adaptation video."""


def plot_returns(
    path: Path, ours: dict[str, Any], random_init: dict[str, Any], paper: dict[str, Any], title: str
) -> Path:
    """Return vs adaptation steps: ours (mean and 95% CI) beside the paper's rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    ks = np.arange(len(ours["mean"]))
    for summary, label, color in ((ours, "MAML (ours)", "C0"), (random_init, "random init (ours)", "C2")):
        lo, hi = np.array(summary["mean_ci95"]).T
        axes.plot(ks, summary["mean"], "o-", color=color, label=label)
        axes.fill_between(ks, lo, hi, color=color, alpha=0.2)
    styles = {"maml": ("C0", "MAML (paper)"), "pretrained": ("C1", "pretrained (paper)"),
              "random_init": ("C2", "random init (paper)")}
    for key, (color, label) in styles.items():
        if key in paper:
            axes.plot(np.arange(len(paper[key])), paper[key], "s--", color=color, alpha=0.6, label=label)
    axes.set_xticks(ks)
    axes.set_xlabel("adaptation steps k")
    axes.set_ylabel("mean return")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def run_demo(args: DemoArgs) -> dict[str, Any]:
    """Train (or reuse), evaluate, print the table and write the plot; returns the numbers."""
    if args.device not in DEVICE_CHOICES:
        raise UserError(f"--device must be one of {', '.join(DEVICE_CHOICES)}, got {args.device!r}")
    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    config = demo_config(args.iterations)
    run_dir = RunDir(args.out)
    resume = run_dir.config_path.exists()
    start = time.perf_counter()
    print(f"1/3 meta-training MAML on {FAMILY} ({config.meta_batch_size} tasks x {config.episodes_per_task} "
          f"episodes x horizon 100 per meta-batch, {config.iterations} iterations) into {run_dir.path}")
    train_maml(config, run_dir.path, seed=args.seed, device=args.device, preset="demo", resume=resume,
               progress=not args.no_progress)
    train_seconds = time.perf_counter() - start

    options = EvalOptions(split="test", device=args.device)
    print(f"2/3 evaluating on {options.num_tasks} unseen goals (k = 0..{options.steps}, "
          f"{options.episodes_per_step} episodes per step)")
    common = dict(inner_objective=config.maml.inner_objective, discount=config.maml.discount,
                  gae_lambda=config.maml.gae_lambda, progress=not args.no_progress)
    with run_dir_lock(run_dir.path, create=False):  # one writer at a time, as for `metarl evaluate`
        policy = load_policy(run_dir)
        ours = evaluate_gradient_adaptation(policy, policy.params(), FAMILY, config.maml.inner_lr, options,
                                            **common)
        document = returns_document("maml", FAMILY, options, ours, policy, progress=not args.no_progress).to_json()
        write_eval_json(run_dir, document)
    untrained = initial_policy(config, args.seed)
    baseline = evaluate_gradient_adaptation(untrained, untrained.params(), FAMILY, config.maml.inner_lr, options,
                                            **common)
    baseline_document = returns_document("random_init", FAMILY, options, baseline, untrained,
                                      progress=not args.no_progress).to_json()

    reference = paper_returns()
    paper = reference["returns"][FAMILY]
    rows = [
        ("MAML (ours)", document["returns"]["mean"]),
        ("MAML (paper)", paper["maml"]),
        ("random (ours)", baseline_document["returns"]["mean"]),
        ("random (paper)", paper["random_init"]),
        ("pretrained (paper)", paper["pretrained"]),
    ]
    print(f"3/3 mean return on unseen goals after k adaptation steps (higher is better; oracle {paper['oracle']})")
    print("k".ljust(20) + "".join(f"{k:>9d}" for k in range(options.steps + 1)))
    for label, values in rows:
        print(label.ljust(20) + "".join(f"{v:>9.1f}" for v in values))
    ci = document["returns"]["mean_ci95"]
    print("ours 95% CI".ljust(20) + "".join(f"{f'{lo:.0f}..{hi:.0f}':>9}" for lo, hi in ci))
    print(f"paper: {reference['source']}")
    plot = plot_returns(run_dir.path / PLOT_NAME, document["returns"], baseline_document["returns"], paper,
                        f"{FAMILY}: return on {options.num_tasks} unseen goals")
    video = None if args.no_video else render_demo_video(run_dir, args.seed)
    total = time.perf_counter() - start
    print(f"wrote {run_dir.eval_path('test')} and {plot}; training {train_seconds:.0f} s, total {total:.0f} s")
    return {"maml": document, "random_init": baseline_document, "paper": paper, "seconds": total, "video": video}


def render_demo_video(run_dir: RunDir, seed: int) -> Path | None:
    """Render the policy before and after 1 and 3 adaptation steps on one unseen goal.

    Returns the video path, or ``None`` (with a message saying why) when rendering is unavailable.
    """
    from metarl.methods.dispatch import render_run
    from metarl.video.render import RenderingUnavailableError
    from metarl.video.run_videos import RenderOptions

    options = RenderOptions(split="test", task_index=0, steps=(0, 1, 3), width=192, height=192, device="cpu")
    target = run_dir.path / "demo_before_after.mp4"
    print(f"video: the policy on unseen goal 0 before adaptation and after k = 1 and 3 steps -> {target}")
    try:
        result = render_run(run_dir.path, options, target)
    except RenderingUnavailableError as error:
        print(f"video skipped: {error}")
        return None
    returns = ", ".join(f"k={k}: {value:.1f}" for k, value in result.returns.items())
    print(f"video: {result.frames} frames; return of the episodes shown: {returns}")
    return result.path


def main(argv: list[str]) -> int:
    run_demo(parse(DemoArgs, argv, prog="metarl demo"))
    return 0
