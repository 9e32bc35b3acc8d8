"""metarl.video.render (backend, rollouts, panels, encode): frames, panels, videos read back, and the errors a user can hit."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import imageio.v2 as imageio
import imageio.v3 as iio
import numpy as np
import pytest

import metarl_envs as envs
from metarl.video import backend as backend_module
from metarl.video import panels as panels_module
from metarl.video import render


def _point_rollout(steps: int, seed: int = 0) -> render.Rollout:
    env = render.make_render_env("Point2DNav")
    task = envs.distribution("Point2DNav").sample(1, "test", np.random.default_rng(0))[0]
    frames = render.FrameRenderer(width=64, height=48)
    policy = render.random_policy_fn(env.action_space, seed=seed)
    return render.rollout(env, policy, frames, task=task, seed=seed, max_steps=steps)


def test_rollout_records_frames_observations_and_rewards() -> None:
    result = _point_rollout(steps=7)
    assert result.frames.shape == (8, 48, 64, 3) and result.frames.dtype == np.uint8
    assert result.observations.shape == (8, 2)
    assert result.actions.shape == (7, 2)
    assert result.rewards.shape == (7,)
    assert result.total_return == pytest.approx(result.rewards.sum())
    assert np.all(result.rewards < 0)  # Point2DNav pays minus the distance to the goal
    assert not np.array_equal(result.frames[0], result.frames[-1])  # the agent moved


def test_compose_frames_puts_panels_side_by_side_and_holds_the_shorter_one() -> None:
    short, long = _point_rollout(steps=3), _point_rollout(steps=6, seed=1)
    panels = [render.Panel(short, ("task A", "k = 0")), render.Panel(long, ("task A", "k = 1"))]
    frames = list(render.compose_frames(panels))
    band = render.caption_height(panels)
    assert len(frames) == 7
    assert all(frame.shape == (band + 48, 128, 3) for frame in frames)
    # the text lies in a band above the pictures: each picture is its rollout's frame, untouched
    for t, frame in enumerate(frames):
        assert np.array_equal(frame[band:, :64], short.frames[min(t, 3)])  # the short panel holds its last
        assert np.array_equal(frame[band:, 64:], long.frames[t])
    assert frames[0][:band].std() > 10  # text is drawn in the band
    strided = list(render.compose_frames(panels, frame_stride=4))
    assert len(strided) == 3  # steps 0, 4 and the last (6)


def test_panel_step_lines_must_match_the_frames() -> None:
    result = _point_rollout(steps=2)
    with pytest.raises(ValueError, match="one entry per frame"):
        render.Panel(result, ("x",), step_lines=(("a",),))


@pytest.mark.render
def test_mp4_has_the_right_frame_count_and_size(tmp_path: Path) -> None:
    env = gym.make("HalfCheetah-v5")  # a MuJoCo env: frames come from mujoco.Renderer
    frames = render.FrameRenderer(width=96, height=64)
    try:
        result = render.rollout(
            env, render.random_policy_fn(env.action_space, 0), frames, max_steps=9
        )
    finally:
        frames.close()
        env.close()
    assert result.frames.shape == (10, 64, 96, 3)
    assert result.frames.std() > 5  # a real picture, not a blank buffer
    panels = [render.Panel(result, ("k = 0",)), render.Panel(result, ("k = 1",))]
    out = tmp_path / "videos" / "clip.mp4"  # the folder is created
    count, size = render.write_video(render.compose_frames(panels), out, fps=20)
    band = render.caption_height(panels)
    assert (count, size) == (10, (band + 64, 192)) and size[0] % 16 == 0
    with imageio.get_reader(out) as reader:
        read_back = [frame for frame in reader]
        assert reader.get_meta_data()["fps"] == pytest.approx(20)
    assert len(read_back) == 10
    assert read_back[0].shape == (band + 64, 192, 3)
    assert [p.name for p in out.parent.iterdir()] == ["clip.mp4"]  # no temp file left


def test_gif_by_extension(tmp_path: Path) -> None:
    result = _point_rollout(steps=4)
    out = tmp_path / "clip.gif"
    panels = [render.Panel(result, ("k = 0",))]
    count, size = render.write_video(render.compose_frames(panels), out, 10)
    frames = iio.imread(out, index=None)
    height = render.caption_height(panels) + 48
    assert (count, size) == (5, (height, 64))
    assert frames.shape[:3] == (5, height, 64)


def test_bad_output_paths_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.mp4, \.gif"):
        render.check_video_path(tmp_path / "clip.avi")
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        render.check_video_path(tmp_path / "dir.mp4")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="cannot create the folder"):
        render.check_video_path(blocker / "clip.mp4")
    with _unwritable_folder(tmp_path / "locked") as locked:
        with pytest.raises(ValueError, match="not writable"):
            render.check_video_path(locked / "clip.mp4")
    existing = tmp_path / "clip.mp4"
    existing.write_bytes(b"")
    with _unwritable_file(existing):
        with pytest.raises(ValueError, match="read-only"):
            render.check_video_path(existing)


def _run(*argv: str) -> bool:
    """Run a system tool; whether it succeeded (False when it is not installed)."""
    if shutil.which(argv[0]) is None:
        return False
    return subprocess.run(argv, capture_output=True).returncode == 0


@contextlib.contextmanager
def _unwritable_folder(path: Path) -> Iterator[Path]:
    """A folder that nobody, root included, may write: mode 0o500 for a normal user; for root an
    immutable folder (chattr +i) or else a read-only tmpfs mounted on it."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o500)
        try:
            yield path
        finally:
            path.chmod(0o700)
    elif _run("chattr", "+i", str(path)):
        try:
            yield path
        finally:
            assert _run("chattr", "-i", str(path))
    elif _run("mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)):
        try:
            yield path
        finally:
            assert _run("umount", str(path))
    else:
        pytest.skip("running as root, and neither `chattr +i` nor a read-only tmpfs mount works here "
                    "(root may write into any folder otherwise)")


@contextlib.contextmanager
def _unwritable_file(path: Path) -> Iterator[Path]:
    """A file that nobody may write: mode 0o400, and immutable (chattr +i) for root."""
    if os.geteuid() != 0:
        path.chmod(0o400)
        try:
            yield path
        finally:
            path.chmod(0o600)
    elif _run("chattr", "+i", str(path)):
        try:
            yield path
        finally:
            assert _run("chattr", "-i", str(path))
    else:
        pytest.skip("running as root and `chattr +i` does not work here (root may write any file otherwise)")


def test_unavailable_rendering_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(backend_module, "_selected_backend", None)
    monkeypatch.setattr(backend_module, "_probe_backend", lambda backend: f"no {backend} library")
    with pytest.raises(render.RenderingUnavailableError) as caught:
        render.select_gl_backend(("egl", "osmesa"))
    message = str(caught.value)
    assert "MUJOCO_GL=egl: no egl library" in message and "MUJOCO_GL=osmesa" in message
    assert "libegl1" in message and "libosmesa6" in message


@pytest.mark.render
def test_backend_probe_finds_a_working_backend_or_explains(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_module, "_selected_backend", None)
    assert backend_module._probe_backend("no-such-backend") is not None  # a real failure is reported
    try:
        backend = render.select_gl_backend(force_probe=True)
    except render.RenderingUnavailableError as error:
        pytest.skip(f"no headless OpenGL here: {error}")
    assert os.environ["MUJOCO_GL"] == backend


def test_the_caption_band_names_the_goal_and_its_text_fits() -> None:
    result = _point_rollout(steps=3)
    env = render.make_render_env("Point2DNav")
    legend = render.env_legend(env)
    assert [(item.label, item.marker) for item in legend] == [("goal", "disc"), ("agent", "disc"), ("path", "line")]
    goal = legend[0].color
    # the goal's colour in the env's own picture is the legend's
    env.reset(seed=0)
    assert np.any(np.all(env.render() == np.array(goal, dtype=np.uint8), axis=-1))
    env.close()
    long_line = "identified: crippled_actuator=5, a variant never seen in training (right)"
    panels = [render.Panel(result, ("maml  k = 0", long_line))]
    title = ("Point2DNav test #0: goal_x_m=0.144, goal_y_m=-0.361",)
    (frame, *_) = render.compose_frames(panels, title=title, legend=legend)
    band = render.caption_height(panels, title, legend)
    assert frame.shape == (band + 48, 64, 3) and frame.shape[0] % 16 == 0
    assert np.array_equal(frame[band:], result.frames[0])  # nothing is drawn over the picture
    # the legend's goal marker is drawn in the band, in the goal's colour
    assert np.any(np.all(frame[:band] == np.array(goal, dtype=np.uint8), axis=-1))
    # a line too long for the panel is shrunk, then cut with an ellipsis, never drawn past its panel
    font = panels_module._layout(panels, title, legend).font
    fitted = panels_module._fit(font, long_line, 64 - 8)
    assert fitted.endswith("…") and panels_module._text_width(font, fitted) <= 64 - 8
