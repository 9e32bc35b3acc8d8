"""Rendered episodes: frames of an env (:class:`FrameRenderer`), policies to render, :func:`rollout`.

- :class:`FrameRenderer` turns an env's current state into an RGB frame: MuJoCo
  envs through ``mujoco.Renderer`` with a camera tracking the robot's root body
  from the side (shadows and reflections off: they cost most of the CPU time of
  software rendering and add nothing to a policy video); other envs (Point2DNav)
  through their own ``render_mode="rgb_array"``.
- :func:`rollout` runs any policy callable ``obs -> action`` (MAML fast weights,
  a pretrained or fine-tuned policy, a random policy) for one episode on one
  task and keeps the frames, observations, actions and rewards.

The video shows the *stochastic* policy by default (actions sampled from the
Gaussian, as in evaluation, so the running return matches what ``evaluate``
measures); :func:`gaussian_policy_fn` with ``deterministic=True`` shows the mean
action instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from metarl.video import backend

__all__ = [
    "FrameRenderer",
    "PolicyFn",
    "Rollout",
    "env_fps",
    "gaussian_policy_fn",
    "make_render_env",
    "random_policy_fn",
    "rollout",
]

PolicyFn = Callable[[np.ndarray], np.ndarray]
"""A policy for rendering: observation ``[obs_dim]`` -> action ``[act_dim]``."""


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
        backend.select_gl_backend()
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
