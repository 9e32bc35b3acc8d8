"""Videos of a trained run: one panel per number of adaptation steps k, side by side.

``metarl render RUN_DIR --split test|ood --task-index I --steps 0,1,3`` lands here
(:class:`~metarl.video.options.RenderOptions`: what to render).
The task is number ``I`` of the split's fixed evaluation tasks (the same list
``metarl evaluate`` uses, :func:`metarl.evaluation.protocol.evaluation_tasks`), so a
video shows a task whose numbers are in ``eval_<split>.json``.

How a run's policy after k steps is obtained depends on its method: the method
registry's entry (:mod:`metarl.methods`, ``Method.policies``) names a provider
``(run_dir, config, task, steps, options) -> dict[int, PolicyFn]``.

For methods that adapt by policy-gradient steps (``maml``, ``pretrain``, ``random_init``),
:func:`metarl.video.policies.gradient_adapted_params` follows the evaluation protocol of docs/design.md,
"Evaluation protocol" on the one task (:mod:`metarl.video.policies` holds the providers).

A task-identification run (``Method.kind == "identification"``: ProtoNet, no policy) gives one
panel instead: the robot acting at random, as when its contexts were collected, with the variant
the identifier picks from the transitions seen so far (:func:`metarl.video.protonet.protonet_panel`).

Each panel shows the policy acting (stochastically by default, as evaluated),
under a caption band: the family, split, task index and the task, and a legend
of the picture's markers (Point2DNav: which dot is the goal) across the top;
the method, k and the running return above each panel. Episodes start from the same reset seed in every panel,
so the panels differ only by the policy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from metarl.core.validation import check_memory, step_bytes
from metarl.video import backend
from metarl.video.encode import check_video_path, write_video
from metarl.video.options import (
    RenderOptions,
    describe_task,
    envs_horizon,
    run_horizon,
    select_task,
)
from metarl.video.panels import LegendItem, Panel, compose_frames, env_legend, video_frame_count
from metarl.video.protonet import protonet_panel
from metarl.video.rollouts import FrameRenderer, _is_mujoco_env, env_fps, make_render_env, rollout

__all__ = [
    "RenderOptions",
    "RenderResult",
    "check_render_memory",
    "default_output",
    "describe_task",
    "render_run",
    "select_task",
    "video_title",
]


@dataclasses.dataclass(frozen=True)
class RenderResult:
    """What :func:`render_run` wrote."""

    path: Path
    frames: int
    size: tuple[int, int]  # (height, width) of the video
    returns: dict[int, float]  # k -> return of the episode shown
    task: Any


def default_output(run_dir: str | os.PathLike[str], options: RenderOptions) -> Path:
    """``RUN_DIR/render_<split>_task<I>_k<steps>.mp4``."""
    steps = "-".join(map(str, options.steps))
    return Path(run_dir) / f"render_{options.split}_task{options.task_index}_k{steps}.mp4"


def video_title(family: str, task: Any, options: RenderOptions) -> tuple[str, ...]:
    """The caption line above every panel: family, split, task index and the task."""
    return (f"{family} {options.split} #{options.task_index}: {describe_task(task, 100)}",)


def _encoding_progress(
    panels: Sequence[Panel], options: RenderOptions, title: Sequence[str],
    legend: Sequence[LegendItem],
) -> Any:
    """The video's frames (:func:`metarl.video.compose_frames`), counted on a bar while they are encoded."""
    frames = compose_frames(panels, frame_stride=options.frame_stride, title=title, legend=legend)
    total = video_frame_count(panels, options.frame_stride)
    return tqdm(frames, total=total, desc="writing video", unit="frame", disable=not options.progress,
                leave=False)


def render_run(
    run_dir: str | os.PathLike[str],
    options: RenderOptions,
    out: str | os.PathLike[str] | None = None,
    allow_large: bool = False,
    *,
    lookup: Callable[[str], Any],
) -> RenderResult:
    """Render a run's policy on one evaluation task after each k of ``options.steps``.

    ``lookup`` maps the run's ``config.json["method"]`` to its method registry entry
    (:class:`metarl.methods.Method`: ``kind``, and ``load("policies")``, the provider of its policy
    per k) or raises ``ValueError`` when the method cannot be rendered;
    :func:`metarl.methods.dispatch.render_run` passes the registry's.

    Checks everything that can be wrong before any long work: the output path,
    the run directory and its checkpoint, the method, the task index, the
    memory the episodes and frames need (above half the machine's memory only
    with ``allow_large``), and that headless rendering works. A video written
    inside the run directory holds the directory's writer lock
    (:func:`metarl.storage.runs.run_dir_lock`) meanwhile.

    Raises:
        FileNotFoundError: no run at ``run_dir`` or no checkpoint in it.
        ValueError: unwritable output, unknown method, task index outside the split.
        metarl.video.backend.RenderingUnavailableError: no headless OpenGL backend works.
    """
    from metarl.core.interrupts import sigterm_as_interrupt
    from metarl.storage.runs import RunDir, run_dir_lock

    target = check_video_path(out if out is not None else default_output(run_dir, options))
    run = RunDir(run_dir)
    config = run.read_config()
    checkpoint_dir = run.checkpoint_path.parent
    if not checkpoint_dir.is_dir() or not any(checkpoint_dir.glob("*.safetensors")):
        raise FileNotFoundError(
            f"{run.path} holds no checkpoint (no {checkpoint_dir}/*.safetensors): the run never saved "
            "one; train it (or resume it) until it writes a checkpoint"
        )
    check_render_memory(config, options, allow_large)
    with contextlib.ExitStack() as stack:
        stack.enter_context(sigterm_as_interrupt())
        if target.resolve().is_relative_to(run.path.resolve()):
            stack.enter_context(run_dir_lock(run.path, create=False))
        return _render(run, config, options, target, lookup)


def check_render_memory(config: Mapping[str, Any], options: RenderOptions, allow_large: bool = False) -> None:
    """Refuse a render whose adaptation episodes and frames would need more than half the memory."""
    from metarl.core.rollout import env_dims

    family = config["family"]
    obs_dim, act_dim = env_dims(family)
    horizon = run_horizon(config) or envs_horizon(family)
    max_steps = options.max_steps or horizon
    frames = len(options.steps) * (max_steps // options.frame_stride + 1) * options.width * options.height * 3
    episodes = options.num_tasks * options.episodes_per_step * horizon * 2 * step_bytes(obs_dim, act_dim)
    check_memory(
        "the render", frames + episodes,
        f"--num-tasks {options.num_tasks} x --episodes-per-step {options.episodes_per_step} x horizon {horizon}; "
        f"{len(options.steps)} panels x --max-steps {max_steps} frames of {options.width}x{options.height}",
        allow_large,
    )


def _render(run: Any, config: Mapping[str, Any], options: RenderOptions, target: Path,
            lookup: Callable[[str], Any]) -> RenderResult:
    """The body of :func:`render_run`, once everything is checked."""
    family = config["family"]
    method = lookup(config["method"])
    if method.kind == "identification":
        task = select_task(family, options)
        probe = make_render_env(family)
        if _is_mujoco_env(probe):
            backend.select_gl_backend()
        probe.close()
        panel = protonet_panel(run, task, options)
        fps = options.fps or env_fps(probe) / options.frame_stride
        count, size = write_video(
            _encoding_progress([panel], options, (f"{family} {options.split} #{options.task_index}",),
                               env_legend(probe)),
            target,
            fps=fps,
            quality=options.quality,
        )
        return RenderResult(target, count, size, {0: panel.rollout.total_return}, task)
    provider = method.load("policies")
    task = select_task(family, options)
    env = make_render_env(family)
    if _is_mujoco_env(env):
        backend.select_gl_backend()

    policies = provider(run, config, task, sorted(set(options.steps)), options)
    max_steps = options.max_steps or run_horizon(config)
    frames = FrameRenderer(options.width, options.height)
    panels, returns = [], {}
    try:
        shown = tqdm(options.steps, desc="rendering episodes", unit="episode", disable=not options.progress,
                     leave=False)
        for k in shown:
            episode = rollout(
                env, policies[k], frames, task=task, seed=options.seed, max_steps=max_steps
            )
            returns[k] = episode.total_return
            panels.append(Panel(episode, (f"{config['method']}  k = {k}",)))
    finally:
        frames.close()
        env.close()
    fps = options.fps or env_fps(env) / options.frame_stride
    count, size = write_video(
        _encoding_progress(panels, options, video_title(family, task, options), env_legend(env)),
        target,
        fps=fps,
        quality=options.quality,
    )
    return RenderResult(path=target, frames=count, size=size, returns=returns, task=task)
