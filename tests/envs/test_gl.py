"""MUJOCO_GL is checked before MuJoCo is imported: physics never fails on it, rendering says what to do."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import pytest

from metarl_envs import gl

_PHYSICS = (
    "import gymnasium as gym, numpy as np, envs;"
    "env = gym.make('MetaRL/HalfCheetahVel-v0'); env.reset(seed=0);"
    "print('stepped', env.step(np.zeros(6))[1])"
)


def _run(code: str, mujoco_gl: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, MUJOCO_GL=mujoco_gl)
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                          timeout=120)


def test_an_unknown_mujoco_gl_does_not_break_physics_or_metarl_envs() -> None:
    done = _run(_PHYSICS, "doesnotexist")
    assert done.returncode == 0 and "stepped" in done.stdout, done.stderr
    listing = _run("from metarl.cli import main; raise SystemExit(main(['envs', '--family', 'HalfCheetahVel']))",
                   "doesnotexist")
    assert listing.returncode == 0 and "HalfCheetahVel" in listing.stdout, listing.stderr


@pytest.mark.skipif(ctypes.util.find_library("OSMesa") is not None, reason="libOSMesa is installed here")
def test_osmesa_without_libosmesa_does_not_break_physics() -> None:
    done = _run(_PHYSICS, "osmesa")
    assert done.returncode == 0 and "stepped" in done.stdout, done.stderr


def test_render_refuses_an_unknown_backend_with_what_to_set(tmp_path) -> None:
    done = _run(f"from metarl.cli import main; raise SystemExit(main(['render', {str(tmp_path)!r}]))",
                "doesnotexist")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "MUJOCO_GL='doesnotexist' is not a MuJoCo OpenGL backend" in done.stderr
    assert "libegl1" in done.stderr and "libosmesa6" in done.stderr


def test_osmesa_absent_is_named_with_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulates a machine without libOSMesa (whether or not this one has it)."""
    monkeypatch.setattr(gl, "_find_library", lambda name: None if name == "OSMesa" else f"lib{name}.so")
    problem = gl.mujoco_gl_problem("osmesa")
    assert problem is not None and "libOSMesa" in problem and "apt-get install libosmesa6" in problem
    assert gl.mujoco_gl_problem("egl") is None
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    with pytest.raises(gl.MujocoGLError, match="libosmesa6"):
        gl.check_mujoco_gl(render=True)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert "needs a display" in (gl.mujoco_gl_problem("glfw") or "")


def test_physics_fallback_replaces_a_bad_value_before_mujoco_is_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gl, "_replaced", None)
    monkeypatch.setitem(sys.modules, "mujoco", None)  # pretend: not imported yet
    monkeypatch.delitem(sys.modules, "mujoco")
    monkeypatch.setenv("MUJOCO_GL", "doesnotexist")
    gl.check_mujoco_gl(render=False)
    assert os.environ["MUJOCO_GL"] == "disable" and gl.replaced_mujoco_gl() == "doesnotexist"
    with pytest.raises(gl.MujocoGLError, match="doesnotexist"):
        gl.check_mujoco_gl(render=True)  # rendering still reports the user's value
