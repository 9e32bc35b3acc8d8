"""Shared facts about the families for the envs tests."""

from __future__ import annotations

import numpy as np

import metarl_envs as envs
from metarl_envs.dynamics_families import MULTIPLIER_BASE, TRAIN_EXPONENT

GOAL_FAMILIES = ("Point2DNav", "HalfCheetahVel", "HalfCheetahDir", "AntDir", "AntGoal")
DYNAMICS_FAMILIES = tuple(f for f in envs.FAMILIES if f not in GOAL_FAMILIES)
NO_OOD = ("HalfCheetahDir", "AntDir")


def outside_train_support(task: envs.Task) -> bool:
    """Whether ``task`` lies outside its family's training support (docs/design.md, "Task families")."""
    family = task.family
    if family == "Point2DNav":
        return max(abs(task.goal_x_m), abs(task.goal_y_m)) > 0.5
    if family == "HalfCheetahVel":
        return task.goal_velocity_mps > 2.0
    if family == "AntGoal":
        return float(np.hypot(task.goal_x_m, task.goal_y_m)) > 3.0
    if family.endswith("RandParams"):
        for field, base in MULTIPLIER_BASE.items():
            exponents = np.log(np.asarray(getattr(task, f"{field}_multiplier"))) / np.log(base)
            if not np.all(np.abs(exponents) > TRAIN_EXPONENT):
                return False
        return True
    if family == "HalfCheetahCrippled":
        return task.crippled_actuator in (4, 5)
    if family == "AntCrippled":
        return task.crippled_leg == 3
    raise AssertionError(f"no ood rule for {family}")


# family -> (field, a value outside the family's domain)
OUT_OF_DOMAIN = {
    "Point2DNav": ("goal_x_m", 11.0),
    "HalfCheetahVel": ("goal_velocity_mps", 3.5),
    "HalfCheetahDir": ("direction_sign", 0),
    "AntDir": ("direction_sign", 2),
    "AntGoal": ("goal_y_m", 4.5),
    "HalfCheetahRandParams": ("body_mass_multiplier", 100.0),
    "HopperRandParams": ("dof_damping_multiplier", 0.01),
    "Walker2dRandParams": ("geom_friction_multiplier", 50.0),
    "HalfCheetahCrippled": ("crippled_actuator", 6),
    "AntCrippled": ("crippled_leg", 4),
}


def with_field(task: envs.Task, field: str, value: float) -> dict:
    """``task.to_dict()`` with ``field`` set to ``value`` (every element, for vector fields)."""
    data = task.to_dict()
    data[field] = [value] * len(data[field]) if isinstance(data[field], list) else value
    return data
