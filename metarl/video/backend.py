"""Headless OpenGL for MuJoCo: :func:`select_gl_backend` picks ``MUJOCO_GL``.

MuJoCo binds its OpenGL backend when ``mujoco`` is first imported, and a backend
that is missing can crash the process, so each candidate (``egl``, then
``osmesa``) is tried in a subprocess that renders one small frame; the first that
works is written to ``os.environ``. A ``MUJOCO_GL`` set by the user is respected
(and probed). If ``mujoco`` was already imported in this process, the backend
class MuJoCo's ``Renderer`` reads at construction (``gl_context.GLContext``) is
pointed at the chosen one. When nothing works, :class:`RenderingUnavailableError`
says which system packages to install.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from metarl_envs.gl import MujocoGLError, check_mujoco_gl

__all__ = ["GL_BACKENDS", "RenderingUnavailableError", "select_gl_backend"]

GL_BACKENDS: tuple[str, ...] = ("egl", "osmesa")
"""Headless OpenGL backends tried in order by :func:`select_gl_backend`."""

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
            f"mujoco was imported before metarl.video.backend chose MUJOCO_GL={backend}, and switching "
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
