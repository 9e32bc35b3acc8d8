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
from metarl.core.flags import OffSwitch, flag_dataclass, optional, own_flags, parse
from metarl.methods.dispatch import render_run
from metarl.video import render
from metarl.video.run_videos import RenderOptions, describe_task


@dataclasses.dataclass(frozen=True)
class _CommandFlags:
    run_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """The run directory written by `metarl train ...` (needs its checkpoint)."""
    steps: str = "0,1,3"
    """Comma-separated numbers of adaptation steps k, one panel each (0 = before adaptation)."""
    out: Annotated[Path | None, optional("PATH", "RUN_DIR/render_<split>_task<I>_k<steps>.mp4")] = None
    """Output video, .mp4 or .gif."""
    allow_large: bool = False
    """Allow tasks x episodes and frames estimated above half of this machine's memory."""
    no_progress: OffSwitch = False
    """Hide the progress bars (adaptation or fine-tuning, episodes, encoding)."""


# The video's flags are RenderOptions' own fields (their docstrings are the help texts), in --help's order;
# the command adds the run directory, --steps as text, --out and its switches.
_COMMAND = {flag[0]: flag for flag in own_flags(_CommandFlags)}
_OPTIONS = {flag[0]: flag for flag in own_flags(RenderOptions)}
FLAG_ORDER: tuple[str, ...] = (
    "run_dir", "split", "task_index", "steps", "out", "num_tasks", "episodes_per_step", "seed", "width",
    "height", "deterministic", "max_steps", "frame_stride", "fps", "device", "quality", "allow_large",
    "no_progress",
)
RenderArgs = flag_dataclass(
    "RenderArgs",
    "Render a run before and after adaptation on one unseen task (mp4 or gif).",
    [_COMMAND[name] if name in _COMMAND else _OPTIONS[name] for name in FLAG_ORDER],
    __name__,
)


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
