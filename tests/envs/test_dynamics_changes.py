"""Every dynamics change, checked where it lands: actuator controls and forces, model fields.

References are built independently of ``envs``: the nominal models are loaded from
gymnasium's XML files with plain ``mujoco.MjModel.from_xml_path``, actuators are
found by the name of the joint they drive, and the multiplied fields are
recomputed as ``nominal * multiplier`` element by element.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import metarl_envs as envs

ASSETS = Path(gym.__file__).resolve().parent / "envs" / "mujoco" / "assets"
XML = {"HalfCheetahRandParams": "half_cheetah.xml", "HopperRandParams": "hopper.xml",
       "Walker2dRandParams": "walker2d_v5.xml"}
RANDOMISED = ("body_mass", "body_inertia", "dof_damping", "geom_friction")
# HalfCheetah's actuators in order, by the joint each drives (gymnasium's half_cheetah.xml)
CHEETAH_JOINTS = ("bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot")
# Ant leg k (task field crippled_leg) -> its two joints (front left, front right, back left, back right)
ANT_LEGS = {0: ("hip_1", "ankle_1"), 1: ("hip_2", "ankle_2"), 2: ("hip_3", "ankle_3"), 3: ("hip_4", "ankle_4")}


def _nominal_model(family: str) -> mujoco.MjModel:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # half_cheetah.xml's deprecated settotalmass
        return mujoco.MjModel.from_xml_path(str(ASSETS / XML[family]))


def _disabled_joints(family: str, task: envs.Task) -> set[str]:
    if family == "HalfCheetahCrippled":
        return set() if task.crippled_actuator == -1 else {CHEETAH_JOINTS[task.crippled_actuator]}
    return set() if task.crippled_leg == -1 else set(ANT_LEGS[task.crippled_leg])


def _actuated_joints(model: mujoco.MjModel) -> list[str]:
    return [model.joint(int(model.actuator_trnid[i, 0])).name for i in range(model.nu)]


CRIPPLED_TASKS = [("HalfCheetahCrippled", k) for k in (-1, 0, 1, 2, 3, 4, 5)] + \
                 [("AntCrippled", k) for k in (-1, 0, 1, 2, 3)]


@pytest.mark.parametrize(("family", "index"), CRIPPLED_TASKS)
def test_crippling_zeroes_exactly_the_named_joints_actuators(family: str, index: int) -> None:
    task = envs.distribution(family).task_class(index)
    disabled = _disabled_joints(family, task)
    env = gym.make(envs.env_id(family)).unwrapped
    vec = gym.make_vec(envs.env_id(family), num_envs=2, vectorization_mode="vector_entry_point")
    intact = envs.distribution(family).task_class(-1)
    env.reset(seed=0, options={"task": task})
    vec._batch.bind("actuator_force")  # an output field: registered before the steps copy it out
    vec.reset(seed=0, options={"tasks": [intact, task]})
    model = env.model
    joints = _actuated_joints(model)
    assert len(disabled) == (0 if index == -1 else (1 if family == "HalfCheetahCrippled" else 2))
    assert disabled <= set(joints)
    nominal_gear = env.model.actuator_gear.copy()
    rng = np.random.default_rng(index + 10)
    for _ in range(5):
        action = rng.uniform(0.2, 1.0, model.nu) * rng.choice([-1.0, 1.0], model.nu)  # never zero
        env.step(action)
        vec.step(np.stack([action, action]))
        controls = {"single": env.data.ctrl, "vector": vec._batch.bind("ctrl")[1]}
        forces = {"single": env.data.actuator_force, "vector": vec._batch.bind("actuator_force")[1]}
        for side in ("single", "vector"):
            for i, joint in enumerate(joints):
                if joint in disabled:  # no control and no actuator force on the crippled joint
                    assert controls[side][i] == 0.0 and forces[side][i] == 0.0, (side, joint)
                else:  # the commanded action reaches every other actuator unchanged
                    assert controls[side][i] == action[i], (side, joint)
                    assert forces[side][i] != 0.0, (side, joint)
        # the intact sub-env receives every action
        np.testing.assert_array_equal(vec._batch.bind("ctrl")[0], action)
    # the gains of the model are untouched: crippling acts on the control only
    np.testing.assert_array_equal(env.model.actuator_gear, nominal_gear)
    np.testing.assert_array_equal(vec.model.actuator_gear, nominal_gear)


def _model_arrays(model: mujoco.MjModel) -> dict[str, np.ndarray]:
    names = [name for name in dir(model) if not name.startswith("_")]
    arrays = {}
    for name in names:
        value = getattr(model, name)
        if isinstance(value, np.ndarray):
            arrays[name] = value.copy()
    return arrays


@pytest.mark.parametrize("family", list(XML))
def test_rand_params_scale_exactly_the_named_fields_and_reset_between_tasks(family: str) -> None:
    nominal = _nominal_model(family)
    first, second = envs.distribution(family).sample(2, "ood", np.random.default_rng(0))
    env = gym.make(envs.env_id(family)).unwrapped
    vec = gym.make_vec(envs.env_id(family), num_envs=2, vectorization_mode="vector_entry_point")

    def expected(task: envs.Task) -> dict[str, np.ndarray]:
        out = {}
        for field in RANDOMISED:  # nominal * multiplier, element by element (row-major flattening)
            flat_nominal = getattr(nominal, field).reshape(-1)
            multipliers = getattr(task, f"{field}_multiplier")
            assert len(multipliers) == flat_nominal.size
            out[field] = np.array([n * m for n, m in zip(flat_nominal, multipliers, strict=True)]
                                  ).reshape(getattr(nominal, field).shape)
        return out

    def reference_model(task: envs.Task) -> mujoco.MjModel:
        model = _nominal_model(family)
        for field, values in expected(task).items():
            getattr(model, field)[...] = values
        mujoco.mj_setConst(model, mujoco.MjData(model))
        return model

    nominal_arrays = _model_arrays(nominal)
    snapshots = []
    for step, (task, other) in enumerate([(first, second), (second, first), (first, second)]):
        env.reset(seed=step, options={"task": task})
        vec.reset(seed=step, options={"tasks": [task, other]})
        values = expected(task)
        for field in RANDOMISED:
            np.testing.assert_array_equal(getattr(env.model, field), values[field], err_msg=field)
            np.testing.assert_array_equal(vec._batch.expand(field)[0], values[field], err_msg=field)
            np.testing.assert_array_equal(vec._batch.expand(field)[1], expected(other)[field], err_msg=field)
            assert not np.allclose(values[field], nominal_arrays[field])  # the task changed it
        # every model field equals MuJoCo's own model with just the named fields scaled (the
        # constants mj_setConst derives from them follow; nothing else moves)
        reference = _model_arrays(reference_model(task))
        compared = 0
        for name, value in _model_arrays(env.model).items():
            if name in reference and value.shape == reference[name].shape:
                np.testing.assert_allclose(value, reference[name], rtol=1e-12, atol=1e-300, err_msg=name)
                compared += 1
        assert compared > 100
        # the vector env expands only the randomised fields (plus what tests expand themselves)
        assert set(vec._fields) == set(RANDOMISED)
        snapshots.append({field: getattr(env.model, field).copy() for field in RANDOMISED})
    for field in RANDOMISED:  # A, B, A: the second A equals the first (nothing compounds)
        np.testing.assert_array_equal(snapshots[0][field], snapshots[2][field])
    # the nominal task restores the nominal model
    env.reset(seed=0, options={"task": type(first).nominal()})
    for field in RANDOMISED:
        np.testing.assert_allclose(getattr(env.model, field), getattr(nominal, field), rtol=1e-15, atol=0)
