"""Headless rollout videos: one panel per policy (e.g. before and after k adaptation steps).

This module is the public face of the pieces, each usable on its own and each in
its own module (:mod:`metarl.video.backend`, :mod:`metarl.video.rollouts`,
:mod:`metarl.video.panels`, :mod:`metarl.video.encode`):

- :func:`select_gl_backend` picks ``MUJOCO_GL`` for headless rendering. MuJoCo
  binds its OpenGL backend when ``mujoco`` is first imported, and a backend that
  is missing can crash the process, so each candidate (``egl``, then ``osmesa``)
  is tried in a subprocess that renders one small frame; the first that works is
  written to ``os.environ``. A ``MUJOCO_GL`` set by the user is respected (and
  probed). If ``mujoco`` was already imported in this process, the backend class
  MuJoCo's ``Renderer`` reads at construction (``gl_context.GLContext``) is
  pointed at the chosen one. When nothing works, :class:`RenderingUnavailableError`
  says which system packages to install.
- :class:`FrameRenderer` (an env's state as an RGB frame) and :func:`rollout` (one
  episode of any policy callable on one task, its frames kept): :mod:`metarl.video.rollouts`.
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

from metarl.video.backend import GL_BACKENDS, RenderingUnavailableError, select_gl_backend
from metarl.video.encode import VIDEO_SUFFIXES, check_video_path, write_video
from metarl.video.panels import (
    LegendItem,
    Panel,
    caption_height,
    compose_frames,
    env_legend,
    video_frame_count,
)
from metarl.video.rollouts import (
    FrameRenderer,
    PolicyFn,
    Rollout,
    env_fps,
    gaussian_policy_fn,
    make_render_env,
    random_policy_fn,
    rollout,
)

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
    "env_fps",
    "env_legend",
    "gaussian_policy_fn",
    "make_render_env",
    "random_policy_fn",
    "rollout",
    "select_gl_backend",
    "video_frame_count",
    "write_video",
]
