"""Panels side by side under a caption band: :func:`compose_frames` makes a video's frames.

The caption band across the top holds the task and a legend of the picture's
markers, then above each panel its k, running return and optional per-step
lines such as ProtoNet's identified variant; never over the pictures. The font
is the largest at which the text fits (long lines are cut with an ellipsis).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from metarl.video.rollouts import Rollout

__all__ = [
    "CAPTION_BACKGROUND",
    "LegendItem",
    "Panel",
    "caption_height",
    "compose_frames",
    "env_legend",
    "video_frame_count",
]


@dataclasses.dataclass(frozen=True)
class Panel:
    """One panel of the video: a rollout and its text.

    Attributes:
        rollout: What to show.
        header: Lines shown on every frame (e.g. the task and ``k = 1``).
        step_lines: Optional extra lines per frame (``len == rollout.steps + 1``),
            e.g. the variant a task-identification model picks from the
            transitions seen so far.
    """

    rollout: Rollout
    header: tuple[str, ...]
    step_lines: tuple[tuple[str, ...], ...] | None = None

    def __post_init__(self) -> None:
        if self.step_lines is not None and len(self.step_lines) != self.rollout.steps + 1:
            raise ValueError(
                f"step_lines needs one entry per frame ({self.rollout.steps + 1}), got {len(self.step_lines)}"
            )


@dataclasses.dataclass(frozen=True)
class LegendItem:
    """One entry of a video's legend: what a marker of the picture means.

    Attributes:
        label: e.g. ``"goal"``.
        color: RGB of the marker in the picture.
        marker: ``"disc"`` (a dot) or ``"line"`` (a stroke, e.g. a path).
    """

    label: str
    color: tuple[int, int, int]
    marker: str = "disc"

    def __post_init__(self) -> None:
        if self.marker not in ("disc", "line"):
            raise ValueError(f"marker must be 'disc' or 'line', got {self.marker!r}")


def env_legend(env: Any) -> tuple[LegendItem, ...]:
    """The legend of an env's picture: its ``metadata["render_legend"]`` of ``(label, marker, rgb)``.

    Empty for envs without one (MuJoCo robots need none).
    """
    unwrapped = getattr(env, "unwrapped", env)
    entries = (getattr(unwrapped, "metadata", None) or {}).get("render_legend", ())
    return tuple(LegendItem(label, tuple(color), marker) for label, marker, color in entries)


CAPTION_BACKGROUND = (24, 24, 24)
"""RGB of the caption band above the panels."""
_MARGIN = 4  # pixels around the caption text
_MIN_FONT = 8  # the smallest font size before long lines are cut with an ellipsis


def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _text_width(font: Any, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)


def _fit(font: Any, text: str, width: int) -> str:
    """``text``, cut with an ellipsis to fit ``width`` pixels."""
    if _text_width(font, text) <= width:
        return text
    while text and _text_width(font, text + "…") > width:
        text = text[:-1]
    return text + "…"


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where the caption band's text goes: font, line height, band height (see :func:`compose_frames`)."""

    font: Any
    line_height: int
    title_rows: int
    caption_rows: int
    band_height: int


def _layout(
    panels: Sequence[Panel], title: Sequence[str], legend: Sequence[LegendItem]
) -> _Layout:
    """The largest font (from ``height / 14``, 10..14 px, down to 8) at which the text fits its width.

    Title lines span the whole video; each panel's lines fit the panel's width.
    Lines still too long at the smallest font are cut with an ellipsis when drawn.
    The band is rounded up so that the video's height stays a multiple of 16 when
    the panels' is (H.264 then needs no padding).
    """
    height, width = panels[0].rollout.frames.shape[1:3]
    total_width = width * len(panels)
    caption_rows = max(len(panel.header) + 1 + max((len(lines) for lines in panel.step_lines or ()),
                                                  default=0) for panel in panels)
    longest_panel_lines = [*(line for panel in panels for line in panel.header), "step 0000  return -00000.0"]
    longest_panel_lines += [line for panel in panels for lines in panel.step_lines or () for line in lines]
    legend_text = "   ".join(f"●  {item.label}" for item in legend)
    size = max(10, min(14, height // 14))
    font = _font(size)
    while size > _MIN_FONT and (
        any(_text_width(font, line) > width - 2 * _MARGIN for line in longest_panel_lines)
        or any(_text_width(font, line) > total_width - 2 * _MARGIN for line in [*title, legend_text])
    ):
        size -= 1
        font = _font(size)
    line_height = size + 3
    title_rows = len(title) + (1 if legend else 0)
    band = 2 * _MARGIN + line_height * (title_rows + caption_rows) + (_MARGIN if title_rows else 0)
    band += (-(band + height)) % 16
    return _Layout(font, line_height, title_rows, caption_rows, band)


def _draw_band(
    layout: _Layout,
    total_width: int,
    panel_width: int,
    title: Sequence[str],
    legend: Sequence[LegendItem],
    panel_lines: Sequence[Sequence[str]],
) -> np.ndarray:
    """The caption band ``[band_height, total_width, 3]``: title and legend, then each panel's lines."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (total_width, layout.band_height), CAPTION_BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, line_height, white = layout.font, layout.line_height, (255, 255, 255)
    y = _MARGIN
    for line in title:
        draw.text((_MARGIN, y), _fit(font, line, total_width - 2 * _MARGIN), font=font, fill=white)
        y += line_height
    if legend:
        x, radius = _MARGIN, max(2, line_height // 3)
        centre = y + line_height // 2
        for item in legend:
            if item.marker == "disc":
                draw.ellipse((x, centre - radius, x + 2 * radius, centre + radius), fill=item.color)
            else:
                draw.line((x, centre, x + 2 * radius, centre), fill=item.color, width=2)
            x += 2 * radius + 4
            draw.text((x, y), item.label, font=font, fill=white)
            x += _text_width(font, item.label) + 3 * line_height // 2
        y += line_height
    if layout.title_rows:
        y += _MARGIN
    for index, lines in enumerate(panel_lines):
        left = index * panel_width
        if index:
            draw.line((left, y, left, layout.band_height), fill=(90, 90, 90))
        for row, line in enumerate(lines):
            text = _fit(font, line, panel_width - 2 * _MARGIN)
            draw.text((left + _MARGIN, y + row * line_height), text, font=font, fill=white)
    return np.asarray(image, dtype=np.uint8)


def _frame_indices(panels: Sequence[Panel], frame_stride: int) -> list[int]:
    """Steps shown by the video: every ``frame_stride``-th of the longest rollout, and its last."""
    num_frames = max(panel.rollout.frames.shape[0] for panel in panels)
    indices = list(range(0, num_frames, frame_stride))
    if indices[-1] != num_frames - 1:
        indices.append(num_frames - 1)
    return indices


def video_frame_count(panels: Sequence[Panel], frame_stride: int = 1) -> int:
    """How many frames :func:`compose_frames` yields for ``panels``."""
    return len(_frame_indices(panels, frame_stride))


def compose_frames(
    panels: Sequence[Panel],
    frame_stride: int = 1,
    *,
    title: Sequence[str] = (),
    legend: Sequence[LegendItem] = (),
) -> Iterator[np.ndarray]:
    """Yield video frames ``[band + height, width * len(panels), 3]`` uint8, panels side by side.

    The text goes in a dark caption band above the pictures, never over them: first
    the ``title`` lines and the ``legend`` (coloured markers and what they are),
    across the whole width; then, above each panel, its header, ``step t  return
    <running return>`` (the sum of the rewards received so far) and its step lines.
    The band's height (:func:`caption_height`) makes the frame height a multiple of
    16 when the panels' is. Frame ``t`` shows step ``t`` of every rollout; a rollout
    that ended earlier holds its last frame.

    Args:
        panels: At least one, all with frames of the same size.
        frame_stride: Keep every ``frame_stride``-th step (smaller files); the
            last frame is always kept.
        title: Lines about the whole video (e.g. the task).
        legend: What the markers of the pictures mean (e.g. :func:`env_legend`).
    """
    if not panels:
        raise ValueError("compose_frames needs at least one panel")
    if frame_stride < 1:
        raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
    shapes = {panel.rollout.frames.shape[1:] for panel in panels}
    if len(shapes) != 1:
        raise ValueError(f"all panels need frames of one size, got {sorted(shapes)}")
    width = panels[0].rollout.frames.shape[2]
    layout = _layout(panels, title, legend)
    running = [np.concatenate([[0.0], np.cumsum(panel.rollout.rewards)]) for panel in panels]
    for t in _frame_indices(panels, frame_stride):
        lines, pictures = [], []
        for panel, returns in zip(panels, running, strict=True):
            i = min(t, panel.rollout.frames.shape[0] - 1)
            panel_lines = [*panel.header, f"step {i:>3}  return {returns[i]:8.1f}"]
            if panel.step_lines is not None:
                panel_lines.extend(panel.step_lines[i])
            lines.append(panel_lines)
            pictures.append(panel.rollout.frames[i])
        band = _draw_band(layout, width * len(panels), width, title, legend, lines)
        yield np.concatenate([band, np.concatenate(pictures, axis=1)], axis=0)  # [band + h, w * panels, 3]


def caption_height(
    panels: Sequence[Panel], title: Sequence[str] = (), legend: Sequence[LegendItem] = ()
) -> int:
    """Height in pixels of the caption band :func:`compose_frames` puts above ``panels``."""
    return _layout(panels, title, legend).band_height
