"""``MUJOCO_GL``, checked once before MuJoCo is imported.

MuJoCo reads ``MUJOCO_GL`` when ``mujoco`` is first imported: an unknown value
raises there, and a backend whose system library is missing (``osmesa``
without libOSMesa) fails there too, so every MuJoCo task family would fail
to load, although physics needs no OpenGL. :func:`check_mujoco_gl` is called
before that import (when the package ``metarl_envs`` is imported, and by the
``metarl`` command line before any command module is imported):

- for work that does not render (``render=False``), a ``MUJOCO_GL`` that
  cannot work here is replaced by ``disable`` (MuJoCo then skips OpenGL), and
  the original value is remembered;
- for rendering (``render=True``) the same problem raises
  :class:`MujocoGLError` with what to install or set.

A backend is judged from its library being on the loader's search path
(``ctypes.util.find_library``); ``glfw`` and ``glx`` need a display.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

__all__ = ["GL_INSTALL", "MujocoGLError", "check_mujoco_gl", "mujoco_gl_problem", "replaced_mujoco_gl"]

_DISABLED = ("disable", "disabled", "off", "false", "0")
_VALID = ("", "enable", "enabled", "on", "true", "1", "glfw", "glx", "egl", "osmesa", *_DISABLED)
_LIBRARIES = {"egl": ("EGL", "OpenGL"), "osmesa": ("OSMesa",), "glx": ("GL",)}

GL_INSTALL: dict[str, str] = {
    "egl": "apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0",
    "osmesa": "apt-get install libosmesa6",
    "glfw": "a display (DISPLAY set) and `pip install glfw`",
    "glx": "a display (DISPLAY set) and apt-get install libgl1",
}
"""What each headless or windowed backend needs on Debian/Ubuntu."""

_HINT = (
    "set MUJOCO_GL=egl (needs `{egl}`), MUJOCO_GL=osmesa (software, needs `{osmesa}`) or MUJOCO_GL=glfw "
    "(needs a display), or unset MUJOCO_GL".format(**GL_INSTALL)
)

_replaced: str | None = None  # the user's MUJOCO_GL when it was replaced by "disable"


class MujocoGLError(RuntimeError):
    """``MUJOCO_GL`` names a backend that cannot render here; the message says what to do."""


def _find_library(name: str) -> str | None:
    return ctypes.util.find_library(name)


def mujoco_gl_problem(value: str | None = None) -> str | None:
    """Why ``MUJOCO_GL=value`` (default: the environment's) cannot render here, or None."""
    value = (os.environ.get("MUJOCO_GL", "") if value is None else value).strip().lower()
    if value not in _VALID:
        return f"MUJOCO_GL={value!r} is not a MuJoCo OpenGL backend (egl, osmesa, glfw, glx)"
    if value in _DISABLED:
        return f"MUJOCO_GL={value} disables MuJoCo's OpenGL"
    if value in ("glfw", "glx") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return f"MUJOCO_GL={value} needs a display, and DISPLAY is not set"
    missing = [name for name in _LIBRARIES.get(value, ()) if _find_library(name) is None]
    if missing:
        return (f"MUJOCO_GL={value} needs the system library lib{missing[0]}, which is not installed "
                f"(install it with `{GL_INSTALL[value]}`)")
    return None


def replaced_mujoco_gl() -> str | None:
    """The user's ``MUJOCO_GL`` if :func:`check_mujoco_gl` replaced it by ``disable``, else None."""
    return _replaced


def check_mujoco_gl(render: bool = False) -> None:
    """Check ``MUJOCO_GL`` before ``mujoco`` is imported (see the module docstring).

    Does nothing once ``mujoco`` is imported (it has bound its backend), nor when
    ``MUJOCO_GL`` is unset.

    Raises:
        MujocoGLError: ``render`` and ``MUJOCO_GL`` cannot render here (the message
            names the value and what to install or set).
    """
    global _replaced
    value = os.environ.get("MUJOCO_GL")
    if render:
        if _replaced is not None:
            value = _replaced
        if value is None or not value.strip():
            return
        problem = mujoco_gl_problem(value)
        if problem is not None:
            raise MujocoGLError(f"cannot render: {problem}; {_HINT}")
        return
    if "mujoco" in sys.modules or value is None or not value.strip():
        return
    if value.strip().lower() in _DISABLED:
        return
    if mujoco_gl_problem(value) is not None:
        _replaced = value
        os.environ["MUJOCO_GL"] = "disable"  # physics needs no OpenGL
