"""What to render of a run (:class:`RenderOptions`), the task it shows and the run's episode length."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np

from metarl.core.flags import choice, device_choice, optional
from metarl.core.validation import check_number


@dataclasses.dataclass(frozen=True)
class RenderOptions:
    """What to render of a run.

    Its fields are also the flags of ``metarl render`` (:class:`metarl.commands.render_cmd.RenderArgs`
    is derived from them, ``steps`` aside: the flag is a comma-separated string), so their
    docstrings are the flags' help texts.
    """

    split: Annotated[str, choice(("test", "ood"))] = "test"
    """Split of the task: test (unseen tasks) or ood (unseen dynamics/goals)."""
    task_index: int = 0
    """Index of the task among the split's evaluation tasks (0..num-tasks-1, as in eval_<split>.json)."""
    steps: tuple[int, ...] = (0, 1, 3)
    """Numbers of adaptation steps k to show, one panel each."""
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
    progress: bool = False
    """Show progress bars (adaptation, episodes, encoding) on stderr."""

    def __post_init__(self) -> None:
        if self.split not in ("test", "ood"):
            raise ValueError(f"split must be one of test, ood, got {self.split!r}")
        if not self.steps:
            raise ValueError("steps must name at least one k, e.g. 0,1,3")
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in self.steps):
            raise ValueError(f"steps must be non-negative integers, got {self.steps}")
        for name in ("num_tasks", "episodes_per_step", "frame_stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.width % 16 or self.height % 16 or self.width < 64 or self.height < 64:
            raise ValueError(
                f"width and height must be multiples of 16 and >= 64, got {self.width}x{self.height}"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        check_number("quality (--quality)", self.quality, 0, 10)
        if self.fps is not None:
            check_number("fps (--fps)", self.fps, 0, low_open=True)


def describe_task(task: Any, max_chars: int = 38) -> str:
    """A short one-line description of a task for a panel.

    Scalar fields are printed as ``name=value``; vector fields (per-body
    multipliers) as their range, ``name x[lo-hi]``. Cut with an ellipsis
    beyond ``max_chars``.
    """
    parts = []
    for field in dataclasses.fields(task):
        value = getattr(task, field.name)
        name = field.name.removesuffix("_multiplier")
        if isinstance(value, (tuple, list)) and value:
            array = np.asarray(value, dtype=np.float64)
            parts.append(f"{name} x[{array.min():.2g}-{array.max():.2g}]")
        elif isinstance(value, float):
            parts.append(f"{name}={value:.3g}")
        else:
            parts.append(f"{name}={value}")
    text = ", ".join(parts)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def select_task(family: str, options: RenderOptions) -> Any:
    """Task ``options.task_index`` of the split's evaluation tasks.

    Raises:
        ValueError: the index is outside ``0..num_tasks-1`` (or the family has no such split).
    """
    from metarl.evaluation.protocol import evaluation_tasks

    if not 0 <= options.task_index < options.num_tasks:
        raise ValueError(
            f"--task-index {options.task_index} is outside the {options.split} split's evaluation "
            f"tasks: choose 0..{options.num_tasks - 1} (or raise --num-tasks)"
        )
    tasks = evaluation_tasks(family, options.split, options.num_tasks, options.seed)
    return tasks[options.task_index]


def envs_horizon(family: str) -> int:
    """The registered horizon of ``family``."""
    import metarl_envs as envs

    return int(envs.family_spec(family).horizon)


def run_horizon(config: Mapping[str, Any]) -> int | None:
    """The episode length a run was trained with (None: the family's registered horizon)."""
    horizon = config.get("horizon", config.get("sampling", {}).get("horizon"))
    return None if horizon is None else int(horizon)
