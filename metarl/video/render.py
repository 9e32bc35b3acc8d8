"""Headless rollout videos: one panel per policy (e.g. before and after k adaptation steps).

The pieces, each usable on its own:

- :func:`select_gl_backend` picks ``MUJOCO_GL`` for headless rendering. MuJoCo
  binds its OpenGL backend when ``mujoco`` is first imported, and a backend that
  is missing can crash the process, so each candidate (``egl``, then ``osmesa``)
  is tried in a subprocess that renders one small frame; the first that works is
  written to ``os.environ``. A ``MUJOCO_GL`` set by the user is respected (and
  probed). If ``mujoco`` was already imported in this process, the backend class
  MuJoCo's ``Renderer`` reads at construction (``gl_context.GLContext``) is
  pointed at the chosen one. When nothing works, :class:`RenderingUnavailableError`
  says which system packages to install.
- :class:`FrameRenderer` turns an env's current state into an RGB frame: MuJoCo
  envs through ``mujoco.Renderer`` with a camera tracking the robot's root body
  from the side (shadows and reflections off: they cost most of the CPU time of
  software rendering and add nothing to a policy video); other envs (Point2DNav)
  through their own ``render_mode="rgb_array"``.
- :func:`rollout` runs any policy callable ``obs -> action`` (MAML fast weights,
  a pretrained or fine-tuned policy, a random policy) for one episode on one
  task and keeps the frames, observations, actions and rewards.
- :func:`compose_frames` puts rollouts side by side as panels under a caption
  band (the task and a legend of the picture's markers across the top; above
  each panel its k, running return and optional per-step lines such as
  ProtoNet's identified variant), never over the pictures, and :func:`write_video` writes ``.mp4`` (H.264 through
  imageio-ffmpeg) or ``.gif`` (Pillow) by the file extension, atomically.

The video shows the *stochastic* policy by default (actions sampled from the
Gaussian, as in evaluation, so the running return matches what ``evaluate``
measures); :func:`gaussian_policy_fn` with ``deterministic=True`` shows the mean
action instead.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metarl_envs.gl import MujocoGLError, check_mujoco_gl

__all__ = [
    "GL_BACKENDS",
    "VIDEO_SUFFIXES",
    "FrameRenderer",
    "LegendItem",
    "Panel",
    "PolicyFn",
    "RenderingUnavailableError",
    "Rollout",
    "caption_height",
    "check_video_path",
    "compose_frames",
    "env_legend",
    "gaussian_policy_fn",
    "make_render_env",
    "random_policy_fn",
    "rollout",
    "select_gl_backend",
    "video_frame_count",
    "write_video",
]

GL_BACKENDS: tuple[str, ...] = ("egl", "osmesa")
"""Headless OpenGL backends tried in order by :func:`select_gl_backend`."""

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".gif")
"""File extensions :func:`write_video` can write."""

PolicyFn = Callable[[np.ndarray], np.ndarray]
"""A policy for rendering: observation ``[obs_dim]`` -> action ``[act_dim]``."""

_INSTALL_HINT = (
    "Install a headless OpenGL library: on Debian/Ubuntu "
    "`apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0` for EGL, or "
    "`apt-get install libosmesa6` for OSMesa (software), plus the Python package PyOpenGL; "
    "or set MUJOCO_GL to a backend that works on this machine."
)

# A tiny scene rendered by the probe subprocess: if this works, the backend works.
_PROBE_SCRIPT = """
import mujoco
model = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size="1"/></worldbody></mujoco>')
renderer = mujoco.Renderer(model, 16, 16)
data = mujoco.MjData(model)
renderer.update_scene(data)
assert renderer.render().shape == (16, 16, 3)
"""

_selected_backend: str | None = None


class RenderingUnavailableError(RuntimeError):
    """No headless OpenGL backend works here; the message says what to install."""


def _probe_backend(backend: str, timeout_s: float = 120.0) -> str | None:
    """Render one frame with ``MUJOCO_GL=backend`` in a subprocess; ``None`` if it worked, else why not."""
    environment = dict(os.environ, MUJOCO_GL=backend)
    if backend in ("egl", "osmesa"):
        environment["PYOPENGL_PLATFORM"] = backend
    try:
        result = subprocess.run(
            [sys.executable, "-c", _PROBE_SCRIPT],
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout_s:.0f} s"
    if result.returncode == 0:
        return None
    lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {result.returncode}"


def _bind_backend_in_process(backend: str) -> None:
    """Point an already-imported mujoco at ``backend`` (mujoco picks one at import time)."""
    if "mujoco" not in sys.modules:
        return
    from mujoco.rendering.classic import gl_context

    current = getattr(gl_context, "GLContext", None)
    if current is not None and current.__module__.split(".")[1:2] == [backend]:
        return
    if backend not in ("egl", "osmesa"):
        return  # other backends (glfw, glx) are what mujoco picks by itself
    platform = os.environ.get("PYOPENGL_PLATFORM")
    if "OpenGL" in sys.modules and platform not in (None, backend):
        raise RenderingUnavailableError(
            f"PyOpenGL was already imported for platform {platform!r}, so MuJoCo cannot render with "
            f"{backend!r} in this process. Set MUJOCO_GL={backend} before starting Python."
        )
    try:
        module = __import__(f"mujoco.{backend}", fromlist=["GLContext"])
    except ImportError as error:
        raise RenderingUnavailableError(
            f"mujoco was imported before metarl.video.render chose MUJOCO_GL={backend}, and switching "
            f"failed ({error}). Set MUJOCO_GL={backend} before starting Python."
        ) from error
    gl_context.GLContext = module.GLContext


def select_gl_backend(candidates: Sequence[str] = GL_BACKENDS, *, force_probe: bool = False) -> str:
    """Choose a working headless OpenGL backend for MuJoCo and set ``MUJOCO_GL`` to it.

    Call this before ``mujoco`` is imported where possible. The result is cached
    for the process (``force_probe=True`` probes again).

    Args:
        candidates: Backends to try, in order, when ``MUJOCO_GL`` is not set.
        force_probe: Ignore the cached choice.

    Returns:
        The backend now in ``os.environ["MUJOCO_GL"]``.

    Raises:
        RenderingUnavailableError: none of the candidates (or the user's own
            ``MUJOCO_GL``) can render; the message lists each failure and what
            to install.
    """
    global _selected_backend
    if _selected_backend is not None and not force_probe:
        return _selected_backend
    try:
        check_mujoco_gl(render=True)  # a MUJOCO_GL that cannot work: say what to install or set
    except MujocoGLError as error:
        raise RenderingUnavailableError(str(error)) from None
    requested = os.environ.get("MUJOCO_GL", "").strip().lower()
    tried = (requested,) if requested else tuple(candidates)
    if not tried:
        raise ValueError("candidates must name at least one backend, e.g. ('egl', 'osmesa')")
    failures = []
    for backend in tried:
        reason = _probe_backend(backend)
        if reason is None:
            os.environ["MUJOCO_GL"] = backend
            if backend in ("egl", "osmesa"):
                os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            _bind_backend_in_process(backend)
            _selected_backend = backend
            return backend
        failures.append(f"MUJOCO_GL={backend}: {reason}")
    source = "set in the environment" if requested else f"tried {', '.join(tried)}"
    raise RenderingUnavailableError(
        f"headless MuJoCo rendering is unavailable ({source}): {'; '.join(failures)}. {_INSTALL_HINT}"
    )


# -- frames --------------------------------------------------------------------


def _is_mujoco_env(env: Any) -> bool:
    """Whether ``env.unwrapped`` exposes a MuJoCo ``model`` and ``data``."""
    unwrapped = getattr(env, "unwrapped", env)
    model = getattr(unwrapped, "model", None)
    return model is not None and type(model).__name__ == "MjModel" and hasattr(unwrapped, "data")


class FrameRenderer:
    """RGB frames ``[height, width, 3]`` uint8 of an env's current state.

    MuJoCo envs are drawn with ``mujoco.Renderer`` and a camera tracking body 1
    (the robot's root) from the side, at a distance of 3.2 robot radii (the
    radius measured from the geoms at the first frame), 15 degrees above the
    horizon; shadows and reflections are off. Other envs are drawn by their own
    ``render()`` (make them with ``render_mode="rgb_array"``), scaled to fit and
    padded with the picture's corner colour.

    Args:
        width: Frame width in pixels (a multiple of 16 keeps H.264 from padding).
        height: Frame height in pixels (same).
    """

    def __init__(self, width: int = 320, height: int = 240) -> None:
        if width < 16 or height < 16:
            raise ValueError(f"width and height must be >= 16 pixels, got {width}x{height}")
        self.width, self.height = int(width), int(height)
        self._renderer: Any = None
        self._model: Any = None
        self._camera: Any = None

    def _mujoco_frame(self, unwrapped: Any) -> np.ndarray:
        select_gl_backend()
        import mujoco

        model, data = unwrapped.model, unwrapped.data
        if self._renderer is None or self._model is not model:
            self.close()
            if model.vis.global_.offwidth < self.width or model.vis.global_.offheight < self.height:
                model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
                model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
            self._renderer = mujoco.Renderer(model, self.height, self.width)
            self._model = model
            robot_geoms = np.flatnonzero(model.geom_bodyid > 0)
            root = 1 if model.nbody > 1 else 0
            if robot_geoms.size:
                offsets = np.linalg.norm(data.geom_xpos[robot_geoms] - data.xpos[root], axis=1)
                radius = float(np.max(offsets + model.geom_rbound[robot_geoms]))
            else:
                radius = float(model.stat.extent)
            camera = mujoco.MjvCamera()
            camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
            camera.trackbodyid = root
            camera.distance = 3.2 * max(radius, 0.1)
            camera.elevation = -15.0
            camera.azimuth = 90.0
            self._camera = camera
        self._renderer.update_scene(data, camera=self._camera)
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        return np.asarray(self._renderer.render(), dtype=np.uint8).copy()

    def __call__(self, env: Any) -> np.ndarray:
        """The current frame of ``env`` as ``[height, width, 3]`` uint8."""
        unwrapped = getattr(env, "unwrapped", env)
        if _is_mujoco_env(env):
            return self._mujoco_frame(unwrapped)
        image = env.render()
        if image is None:
            raise ValueError(
                f"{type(unwrapped).__name__}.render() returned None: make the env with "
                "render_mode='rgb_array' (metarl.video.render.make_render_env does)"
            )
        image = np.asarray(image, dtype=np.uint8)[..., :3]  # [h, w, 3]
        if image.shape[:2] == (self.height, self.width):
            return image
        # scale to fit, keeping the aspect ratio, and pad with the corner colour
        from PIL import Image

        scale = min(self.width / image.shape[1], self.height / image.shape[0])
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        resized = np.asarray(
            Image.fromarray(image).resize(size, Image.Resampling.BILINEAR), dtype=np.uint8
        )
        canvas = np.empty((self.height, self.width, 3), dtype=np.uint8)
        canvas[:] = image[0, 0]
        top, left = (self.height - size[1]) // 2, (self.width - size[0]) // 2
        canvas[top : top + size[1], left : left + size[0]] = resized
        return canvas

    def close(self) -> None:
        """Free the OpenGL context (a new one is made on the next MuJoCo frame)."""
        if self._renderer is not None:
            self._renderer.close()
        self._renderer, self._model, self._camera = None, None, None


def make_render_env(family: str) -> Any:
    """A single env of ``family`` that :class:`FrameRenderer` can draw.

    MuJoCo families are made as they are (the renderer reads ``model``/``data``);
    others are made with ``render_mode="rgb_array"``.
    """
    import gymnasium as gym

    import metarl_envs as envs

    env_id = envs.env_id(family)
    env = gym.make(env_id)
    if _is_mujoco_env(env):
        return env
    env.close()
    return gym.make(env_id, render_mode="rgb_array")


def env_fps(env: Any, default: float = 20.0) -> float:
    """Real-time frame rate of ``env``: ``metadata["render_fps"]``, else ``1 / dt``, else ``default``."""
    unwrapped = getattr(env, "unwrapped", env)
    fps = (getattr(unwrapped, "metadata", None) or {}).get("render_fps")
    if fps:
        return float(fps)
    dt = getattr(unwrapped, "dt", None)
    return float(1.0 / dt) if dt else default


# -- policies ------------------------------------------------------------------


def gaussian_policy_fn(
    policy: Any, params: Any, *, deterministic: bool = False, seed: int = 0, action_space: Any = None
) -> PolicyFn:
    """Wrap a :class:`~metarl.core.policy.GaussianMLPPolicy` and parameters as ``obs -> action``.

    Args:
        policy: The policy module (its own weights are not used; ``params`` are).
        params: Parameters for :func:`metarl.core.policy.policy_forward` (e.g. adapted
            fast weights of one task), each without a task dimension.
        deterministic: Act with the mean instead of sampling.
        seed: Seed of the action noise (a private ``torch.Generator``).
        action_space: The env's action space: the policy's normalised actions
            are mapped to it (:class:`metarl.core.policy.ActionMap`) as in training.
    """
    import torch

    from metarl.core.policy import ActionMap, policy_forward

    action_map = ActionMap.from_space(action_space) if action_space is not None else None

    generator = torch.Generator().manual_seed(seed)
    cpu_params = {name: value.detach().to("cpu", torch.float32) for name, value in params.items()}
    policy_cpu = policy.to("cpu") if next(policy.parameters()).device.type != "cpu" else policy

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(-1))  # [obs_dim]
            mean, log_std = policy_forward(policy_cpu, cpu_params, obs_t)  # [act_dim], [act_dim]
            if deterministic:
                action = mean.numpy().astype(np.float64)
            else:
                noise = torch.randn(mean.shape, generator=generator)
                action = (mean + torch.exp(log_std) * noise).numpy().astype(np.float64)
            return action if action_map is None else action_map(action)

    return act


def random_policy_fn(action_space: Any, seed: int = 0) -> PolicyFn:
    """Uniformly random actions in the (bounded) ``action_space``, from an explicit generator."""
    rng = np.random.default_rng(seed)
    low, high = np.asarray(action_space.low, np.float64), np.asarray(action_space.high, np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ValueError("random_policy_fn needs a bounded action space")
    return lambda obs: rng.uniform(low, high)


# -- rollouts ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rollout:
    """One rendered episode.

    Attributes:
        frames: ``[steps + 1, height, width, 3]`` uint8, the first after reset.
        observations: ``[steps + 1, obs_dim]``, ``observations[t]`` seen before action ``t``.
        actions: ``[steps, act_dim]``.
        rewards: ``[steps]``.
    """

    frames: np.ndarray
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray

    @property
    def steps(self) -> int:
        """Number of env steps taken."""
        return int(self.rewards.shape[0])

    @property
    def total_return(self) -> float:
        """Undiscounted return of the episode."""
        return float(self.rewards.sum())


def rollout(
    env: Any,
    policy_fn: PolicyFn,
    frame_renderer: FrameRenderer,
    *,
    task: Any | None = None,
    seed: int = 0,
    max_steps: int | None = None,
) -> Rollout:
    """Run ``policy_fn`` for one episode on ``task`` and record every frame.

    Args:
        env: A single env from :func:`make_render_env` (with its time limit).
        policy_fn: ``obs -> action``.
        frame_renderer: Draws the frames.
        task: Passed as ``reset(options={"task": task})``; ``None`` keeps the env's task.
        seed: Reset seed (initial-state noise).
        max_steps: Stop after this many steps even if the episode goes on.
    """
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
    options = {"task": task} if task is not None else None
    obs, _ = env.reset(seed=seed, options=options)
    frames = [frame_renderer(env)]
    observations, actions, rewards = [np.asarray(obs, np.float64)], [], []
    while max_steps is None or len(rewards) < max_steps:
        action = np.asarray(policy_fn(obs), dtype=np.float64)
        obs, reward, terminated, truncated, _ = env.step(action)
        frames.append(frame_renderer(env))
        observations.append(np.asarray(obs, np.float64))
        actions.append(action)
        rewards.append(float(reward))
        if terminated or truncated:
            break
    return Rollout(
        frames=np.stack(frames),  # [steps + 1, h, w, 3]
        observations=np.stack(observations),  # [steps + 1, obs_dim]
        actions=np.stack(actions) if actions else np.zeros((0, 0)),  # [steps, act_dim]
        rewards=np.asarray(rewards, dtype=np.float64),  # [steps]
    )


# -- panels and video ----------------------------------------------------------


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


def check_video_path(path: str | os.PathLike[str]) -> Path:
    """Validate an output video path and create its folder.

    Raises:
        ValueError: the extension is not one of :data:`VIDEO_SUFFIXES`, the path
            is a directory, or its folder cannot be created or written.
    """
    out = Path(path)
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"--out must end in one of {', '.join(VIDEO_SUFFIXES)}, got {str(out)!r}")
    if out.is_dir():
        raise ValueError(
            f"--out {str(out)!r} is a directory; give a file name ending in .mp4 or .gif"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create the folder of --out {str(out)!r}: {error}") from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise ValueError(
            f"cannot write --out {str(out)!r}: folder {str(out.parent)!r} is not writable"
        )
    if out.exists() and not os.access(out, os.W_OK):
        raise ValueError(f"cannot write --out {str(out)!r}: the file exists and is read-only")
    return out


def write_video(
    frames: Iterator[np.ndarray] | Sequence[np.ndarray],
    path: str | os.PathLike[str],
    fps: float = 20.0,
    *,
    quality: float = 6.0,
) -> tuple[int, tuple[int, int]]:
    """Write frames to ``path`` (``.mp4``: H.264 via imageio-ffmpeg; ``.gif``: Pillow).

    Written to a temporary file in the same folder, then renamed, so a failed
    write never leaves a half video under the final name.

    Args:
        frames: ``[height, width, 3]`` uint8 frames, all one size. For mp4 the
            size should be a multiple of 16 on both axes (else ffmpeg pads it).
        path: Output file; see :func:`check_video_path`.
        fps: Frames per second.
        quality: mp4 quality 0..10 (imageio-ffmpeg's scale; 6 keeps sample
            videos at a few hundred KB).

    Returns:
        ``(number of frames, (height, width))`` written.
    """
    import imageio.v2 as imageio
    import imageio.v3 as iio

    out = check_video_path(path)
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    suffix = out.suffix.lower()
    handle, temp_name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=suffix, dir=out.parent)
    os.close(handle)
    count, size = 0, (0, 0)
    try:
        if suffix == ".mp4":
            writer = imageio.get_writer(
                temp_name, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                quality=quality, pixelformat="yuv420p", macro_block_size=16,
            )  # fmt: skip
            append = writer.append_data
        else:
            writer = iio.imopen(temp_name, "w", plugin="pillow")
            duration_ms = round(1000.0 / fps)

            def append(frame: np.ndarray) -> None:
                writer.write(frame, duration=duration_ms, loop=0)

        with writer:
            for frame in frames:
                frame = np.asarray(frame, dtype=np.uint8)
                if count == 0:
                    size = (int(frame.shape[0]), int(frame.shape[1]))
                elif frame.shape[:2] != size:
                    raise ValueError(f"frame {count} has size {frame.shape[:2]}, expected {size}")
                append(frame)
                count += 1
        if count == 0:
            raise ValueError("no frames to write")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_name, 0o666 & ~umask)  # mkstemp makes it private; give it the usual mode
        os.replace(temp_name, out)
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
    return count, size
