"""Every family's reward, re-derived from MuJoCo's raw state with the formulas written out here.

The reference below reads only the simulator (``qpos``, ``qvel``, body ``xpos``,
``cfrc_ext``), the model's timestep and the task's fields, and writes each
family's reward as its docstring (and the paper or gymnasium v5 env it follows)
states it. It shares no code with ``envs``: a sign, weight, index or health bound
changed in a family's reward function makes these tests fail. Both the single env
and the batched vector env are checked, term by term against ``info``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import metarl_envs as envs

MUJOCO_FAMILIES = [f for f in envs.FAMILIES if f != "Point2DNav"]
STEPS = 60
TOL = dict(rtol=1e-10, atol=1e-10)

# frame skip of gymnasium's v5 envs for each robot (the reward's dt = timestep * frame_skip)
FRAME_SKIP = {"HalfCheetah": 5, "Ant": 5, "Hopper": 4, "Walker2d": 4}


def _robot(family: str) -> str:
    for robot in ("HalfCheetah", "Hopper", "Walker2d", "Ant"):
        if family.startswith(robot):
            return robot
    raise AssertionError(family)


def _healthy(robot: str, qpos: np.ndarray, qvel: np.ndarray) -> bool:
    """gymnasium v5's is_healthy, written out per robot."""
    if robot == "Ant":  # finite state and 0.2 <= torso z <= 1.0 (closed interval)
        return bool(np.isfinite(qpos).all() and np.isfinite(qvel).all() and 0.2 <= qpos[2] <= 1.0)
    if robot == "Hopper":  # z > 0.7, |pitch| < 0.2, every entry of (qpos[2:], qvel) in (-100, 100)
        state = np.concatenate([qpos[2:], qvel])
        return bool(qpos[1] > 0.7 and -0.2 < qpos[2] < 0.2 and np.all(np.abs(state) < 100.0))
    if robot == "Walker2d":  # 0.8 < z < 2.0 and -1 < pitch < 1
        return bool(0.8 < qpos[1] < 2.0 and -1.0 < qpos[2] < 1.0)
    return True  # HalfCheetah has no health check


def reference_terms(family: str, task: envs.Task, dt: float, before: dict, after: dict,
                    action: np.ndarray) -> tuple[float, dict[str, float], bool]:
    """(reward, info terms, healthy) of one step from the raw state before and after it.

    ``before``/``after`` hold ``qpos``, ``qvel``, ``xpos`` (bodies) and ``cfrc_ext``;
    ``action`` is the commanded action.
    """
    robot = _robot(family)
    qpos, qvel = after["qpos"], after["qvel"]
    if robot == "Ant":  # velocity of the torso body's position (body 1), as Ant-v5
        vx = (after["xpos"][1, 0] - before["xpos"][1, 0]) / dt
        vy = (after["xpos"][1, 1] - before["xpos"][1, 1]) / dt
    else:  # planar robots: the root slider qpos[0]
        vx, vy = (after["qpos"][0] - before["qpos"][0]) / dt, None
    squared_action = float(sum(a * a for a in action))
    healthy = _healthy(robot, qpos, qvel)
    contact = -5e-4 * float(np.sum(np.clip(after["cfrc_ext"], -1.0, 1.0) ** 2))
    if family == "HalfCheetahVel":  # -|v_x - v*| - 0.05 ||a||^2
        terms = {"reward_forward": -abs(vx - task.goal_velocity_mps), "reward_ctrl": -0.05 * squared_action}
    elif family == "HalfCheetahDir":  # d v_x - 0.05 ||a||^2
        terms = {"reward_forward": task.direction_sign * vx, "reward_ctrl": -0.05 * squared_action}
    elif family == "AntDir":  # d v_x + 1[healthy] - 0.5 ||a||^2 - 5e-4 ||clip(cfrc_ext)||^2
        terms = {"reward_forward": task.direction_sign * vx, "reward_ctrl": -0.5 * squared_action,
                 "reward_contact": contact, "reward_survive": float(healthy)}
    elif family == "AntGoal":  # -(|x - gx| + |y - gy|) - 0.1 ||a||^2, x, y = torso (free joint) position
        distance = abs(qpos[0] - task.goal_x_m) + abs(qpos[1] - task.goal_y_m)
        terms = {"reward_goal": -distance, "reward_ctrl": -0.1 * squared_action}
    elif family == "HalfCheetahRandParams":  # HalfCheetah-v5: v_x - 0.1 ||a||^2
        terms = {"reward_forward": vx, "reward_ctrl": -0.1 * squared_action}
    elif family in ("HopperRandParams", "Walker2dRandParams"):  # v_x + 1[healthy] - 1e-3 ||a||^2
        terms = {"reward_forward": vx, "reward_ctrl": -1e-3 * squared_action,
                 "reward_survive": float(healthy)}
    elif family == "HalfCheetahCrippled":  # v_x - 0.05 ||a||^2 on the commanded action
        terms = {"reward_forward": vx, "reward_ctrl": -0.05 * squared_action}
    elif family == "AntCrippled":  # Ant-v5 on the commanded action
        terms = {"reward_forward": vx, "reward_ctrl": -0.5 * squared_action,
                 "reward_contact": contact, "reward_survive": float(healthy)}
    else:
        raise AssertionError(family)
    reward = float(sum(terms.values()))
    if family == "AntGoal":
        terms["distance_l1_m"] = -terms["reward_goal"]
    terms["x_velocity"] = vx
    if vy is not None:
        terms["y_velocity"] = vy
    return reward, terms, healthy


def _terminates(family: str) -> bool:
    """Which families end an episode when the robot is unhealthy (AntGoal never does)."""
    return family in ("AntDir", "HopperRandParams", "Walker2dRandParams", "AntCrippled")


def _tasks(family: str) -> list[envs.Task]:
    dist = envs.distribution(family)
    tasks = dist.sample(2, "train", np.random.default_rng(3))
    if "ood" in dist.splits:
        tasks += dist.sample(1, "ood", np.random.default_rng(4))
    if family == "HalfCheetahVel":  # v* around the speeds random actions reach: both signs of v - v*
        tasks.append(dist.task_class(0.1))
    if family in ("HalfCheetahDir", "AntDir"):
        tasks = [dist.task_class(1), dist.task_class(-1)]
    return tasks


def _raw(data) -> dict[str, np.ndarray]:
    return {"qpos": data.qpos.copy(), "qvel": data.qvel.copy(), "xpos": data.xpos.copy(),
            "cfrc_ext": data.cfrc_ext.copy()}


def _check_step(family, task, dt, before, after, action, reward, terminated, info) -> None:
    expected_reward, expected_terms, healthy = reference_terms(family, task, dt, before, after, action)
    assert not info["sim_unstable"]
    assert set(info) == {*expected_terms, "sim_unstable"}, sorted(info)
    for key, value in expected_terms.items():
        np.testing.assert_allclose(info[key], value, **TOL, err_msg=key)
    np.testing.assert_allclose(reward, expected_reward, **TOL)
    assert terminated == (_terminates(family) and not healthy)


@pytest.mark.parametrize("family", MUJOCO_FAMILIES)
def test_single_env_reward_matches_the_formula_on_the_raw_state(family: str) -> None:
    env = gym.make(envs.env_id(family)).unwrapped
    dt = env.model.opt.timestep * FRAME_SKIP[_robot(family)]
    rng = np.random.default_rng(0)
    checked = 0
    for n, task in enumerate(_tasks(family)):
        env.reset(seed=n, options={"task": task})
        before = _raw(env.data)
        for _ in range(STEPS):
            action = rng.uniform(-1.0, 1.0, env.action_space.shape)
            _, reward, terminated, _, info = env.step(action)
            after = _raw(env.data)
            _check_step(family, task, dt, before, after, action, reward, terminated, info)
            checked += 1
            if terminated:
                break
            before = after
    assert checked >= 2 * 10


def _vector_raw(vec, i: int) -> dict[str, np.ndarray]:
    batch = vec._batch
    nbody = vec.model.nbody
    xpos = batch.bind("xpos")[i].copy() if vec._xpos is not None else np.zeros((nbody, 3))
    cfrc = batch.bind("cfrc_ext")[i].copy() if vec._cfrc is not None else np.zeros((nbody, 6))
    return {"qpos": batch.bind("qpos")[i].copy(), "qvel": batch.bind("qvel")[i].copy(),
            "xpos": xpos, "cfrc_ext": cfrc}


@pytest.mark.parametrize("family", MUJOCO_FAMILIES)
def test_vector_env_reward_matches_the_formula_on_the_raw_state(family: str) -> None:
    tasks = _tasks(family)
    vec = gym.make_vec(envs.env_id(family), num_envs=len(tasks), vectorization_mode="vector_entry_point")
    vec.reset(seed=5, options={"tasks": tasks})
    dt = vec.model.opt.timestep * FRAME_SKIP[_robot(family)]
    rng = np.random.default_rng(1)
    before = [_vector_raw(vec, i) for i in range(len(tasks))]
    checked = 0
    for _ in range(STEPS):
        actions = rng.uniform(-1.0, 1.0, vec.action_space.shape)
        _, rewards, terminated, _, info = vec.step(actions)
        for i, task in enumerate(tasks):
            after = _vector_raw(vec, i)
            if info["_reward_ctrl"][i]:  # a real step (not the autoreset step after an episode end)
                single_info = {key: info[key][i] for key in info if not key.startswith("_")}
                _check_step(family, task, dt, before[i], after, actions[i], rewards[i], terminated[i],
                            single_info)
                checked += 1
            before[i] = after
    assert checked >= len(tasks) * 10
    vec.close()


def test_point2dnav_reward_and_termination_match_the_formula() -> None:
    """Position = sum of clipped moves from the origin; reward -||s' - g||_2; done within 0.01 m."""
    goal = np.array([0.23, -0.17])
    task = envs.distribution("Point2DNav").task_class(*goal)
    # clipped to (0.1, -0.1), (0.1, 0.1), (0, -0.1), (0.05, -0.05), then within 0.01 m of the goal
    moves = [np.array(m) for m in ([0.5, -0.5], [0.5, 0.5], [0.0, -0.1], [0.05, -0.05], [-0.025, -0.015])]

    def expected() -> list[tuple[float, bool]]:
        position, out = np.zeros(2), []
        for move in moves:
            position = position + np.clip(move, -0.1, 0.1)
            distance = float(np.sqrt(np.sum((position - goal) ** 2)))
            out.append((-distance, bool(np.all(np.abs(position - goal) < 0.01))))
        return out

    reference = expected()
    assert reference[-1][1] and not any(done for _, done in reference[:-1])
    env = gym.make("MetaRL/Point2DNav-v0").unwrapped
    env.reset(seed=0, options={"task": task})
    vec = gym.make_vec("MetaRL/Point2DNav-v0", num_envs=2, vectorization_mode="vector_entry_point")
    other = envs.distribution("Point2DNav").task_class(-0.4, 0.4)
    vec.reset(seed=0, options={"tasks": [task, other]})
    for move, (reward, done) in zip(moves, reference, strict=True):
        _, r, terminated, _, info = env.step(move)
        np.testing.assert_allclose([r, info["reward_dist"], -info["distance_m"]], reward, **TOL)
        assert terminated == done
        _, rv, term_v, _, info_v = vec.step(np.stack([move, move]))
        np.testing.assert_allclose([rv[0], info_v["reward_dist"][0], -info_v["distance_m"][0]], reward, **TOL)
        assert term_v[0] == done
    # the second sub-env followed the same moves towards its own goal
    position = np.sum([np.clip(m, -0.1, 0.1) for m in moves], axis=0)
    np.testing.assert_allclose(rv[1], -np.linalg.norm(position - np.array([-0.4, 0.4])), **TOL)
