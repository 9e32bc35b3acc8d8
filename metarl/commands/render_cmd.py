"""``metarl render RUN_DIR --split test|ood --task-index I --steps 0,1,3 --out videos/NAME.mp4``.

Renders the run's policy on one evaluation task after each requested number of
adaptation steps, panels side by side, headless (MUJOCO_GL chosen between egl
and osmesa). ``.gif`` output when ``--out`` ends so. See :mod:`metarl.video.run_videos`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import tyro

from metarl.core.errors import UserError
from metarl.core.flags import OffSwitch, choice, device_choice, optional, parse
from metarl.methods.dispatch import render_run
from metarl.video import render
from metarl.video.run_videos import RenderOptions, describe_task


@dataclasses.dataclass(frozen=True)
class RenderArgs:
    """Render a run before and after adaptation on one unseen task (mp4 or gif)."""

    run_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """The run directory written by `metarl train ...` (needs its checkpoint)."""
    split: Annotated[str, choice(("test", "ood"))] = "test"
    """Split of the task: test (unseen tasks) or ood (unseen dynamics/goals)."""
    task_index: int = 0
    """Index of the task among the split's evaluation tasks (0..num-tasks-1, as in eval_<split>.json)."""
    steps: str = "0,1,3"
    """Comma-separated numbers of adaptation steps k, one panel each (0 = before adaptation)."""
    out: Annotated[Path | None, optional("PATH", "RUN_DIR/render_<split>_task<I>_k<steps>.mp4")] = None
    """Output video, .mp4 or .gif."""
    num_tasks: int = 40
    """Number of evaluation tasks the index refers to (as in `metarl evaluate`)."""
    episodes_per_step: int = 20
    """Fresh episodes per adaptation step."""
    seed: int = 20170
    """Evaluation seed (fixes the task list, the adaptation episodes and the episode shown)."""
    width: int = 256
    """Panel width in pixels (multiple of 16)."""
    height: int = 192
    """Panel height in pixels (multiple of 16), without the caption band that goes above the panels."""
    deterministic: bool = False
    """Show the mean action instead of sampling as evaluation does."""
    max_steps: Annotated[int | None, optional("INT", "the run's horizon")] = None
    """Cut the episode after this many steps."""
    frame_stride: int = 1
    """Keep every n-th step (smaller files, e.g. 2 for a README gif)."""
    fps: Annotated[float | None, optional("FLOAT", "real time")] = None
    """Frames per second."""
    device: Annotated[str, device_choice()] = "auto"
    """Device for the adaptation steps: auto, cpu or cuda."""
    quality: float = 6.0
    """mp4 quality, 0 (smallest file) to 10 (best); ignored for gif."""
    allow_large: bool = False
    """Allow tasks x episodes and frames estimated above half of this machine's memory."""
    no_progress: OffSwitch = False
    """Hide the progress bars (adaptation or fine-tuning, episodes, encoding)."""


def parse_steps(text: str) -> tuple[int, ...]:
    """``"0,1,3"`` -> ``(0, 1, 3)`` (``UserError`` naming the flag otherwise)."""
    try:
        steps = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(
            f"--steps must be comma-separated integers such as 0,1,3; got {text!r}"
        ) from None
    if not steps or any(k < 0 for k in steps):
        raise UserError(
            f"--steps must be comma-separated non-negative integers such as 0,1,3; got {text!r}"
        )
    return steps


def main(argv: list[str]) -> int:
    args = parse(RenderArgs, argv, prog="metarl render")
    options = RenderOptions(
        split=args.split,
        task_index=args.task_index,
        steps=parse_steps(args.steps),
        num_tasks=args.num_tasks,
        episodes_per_step=args.episodes_per_step,
        seed=args.seed,
        width=args.width,
        height=args.height,
        deterministic=args.deterministic,
        max_steps=args.max_steps,
        frame_stride=args.frame_stride,
        fps=args.fps,
        device=args.device,
        quality=args.quality,
        progress=not args.no_progress,
    )
    import torch

    # The networks are small: intra-op threads only add contention (the env steps on this core too).
    torch.set_num_threads(1)
    try:
        result = render_run(args.run_dir, options, args.out, allow_large=args.allow_large)
    except render.RenderingUnavailableError as error:
        raise UserError(str(error)) from None
    returns = ", ".join(f"k={k}: {value:.1f}" for k, value in result.returns.items())
    print(f"task {options.task_index} of {options.split}: {describe_task(result.task, 100)}")
    print(f"return of the episode shown: {returns}")
    print(f"wrote {result.path} ({result.frames} frames, {result.size[1]}x{result.size[0]})")
    return 0
