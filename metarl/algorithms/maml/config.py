"""MAML's hyperparameters: the inner loop's in :class:`MAMLConfig`, each outer loop's in its own section.

:class:`MAMLConfig` holds what every MAML run uses (inner learning rate, steps and
objective, first order, discount, GAE, advantage normalisation) and names its
outer loop (``outer``: ``"trpo"`` or ``"promp"``). The outer loops' settings are
separate frozen dataclasses, :class:`TRPOConfig` and :class:`ProMPConfig`, both
always present with their defaults; :data:`OUTER_CONFIGS` maps the outer-loop
name to its section, and :attr:`MAMLConfig.outer_config` is the one in use.

A run's ``config.json`` stores the config flat (its ``"maml"`` block: ``max_kl``,
``cg_iters``, ..., ``promp_lr``, ``promp_steps``, ...), as it always has:
:meth:`MAMLConfig.to_dict` writes that block and :meth:`MAMLConfig.from_dict`
reads it back, so run directories written before the sections existed load
and resume unchanged. The field docstrings are the ``metarl train maml --help``
texts (:mod:`metarl.algorithms.maml.options` derives the flags from them).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, ClassVar

from metarl.algorithms.adaptation import OBJECTIVES
from metarl.core.flags import choice
from metarl.core.validation import check_bool, check_choice, check_int, check_number


@dataclasses.dataclass(frozen=True)
class TRPOConfig:
    """The MAML paper's outer loop: a trust-region step through the adaptation (defaults: the paper's)."""

    FLAT_PREFIX: ClassVar[str] = ""
    """Prefix of this section's keys in the flat ``config.json`` block and in the flags."""

    max_kl: float = 0.01
    """TRPO trust-region size (KL bound delta)."""
    cg_iters: int = 10
    """TRPO conjugate-gradient iterations."""
    cg_damping: float = 1e-5
    """Damping added to the KL Hessian-vector products (rllab: 1e-5); >= 0."""
    cg_subsample: float = 1.0
    """TRPO: fraction of the meta-batch's tasks whose KL curvature the conjugate gradient uses, in (0, 1]
    (1: exact; the gradient and the line search always use every task)."""
    line_search_steps: int = 15
    """Maximum step fractions tried by the TRPO line search; >= 1."""
    line_search_backtrack: float = 0.8
    """Factor the TRPO step shrinks by at each line-search step; in (0, 1)."""

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_number(f"{name}.max_kl", self.max_kl, 0, low_open=True)
        check_int(f"{name}.cg_iters", self.cg_iters, 1)
        check_number(f"{name}.cg_damping", self.cg_damping, 0)
        check_number(f"{name}.cg_subsample", self.cg_subsample, 0, 1, low_open=True)
        check_int(f"{name}.line_search_steps", self.line_search_steps, 1)
        check_number(f"{name}.line_search_backtrack", self.line_search_backtrack, 0, 1, low_open=True, high_open=True)


@dataclasses.dataclass(frozen=True)
class ProMPConfig:
    """ProMP's outer loop: clipped likelihood ratio plus an inner-step KL penalty, Adam (defaults: ProMP's)."""

    FLAT_PREFIX: ClassVar[str] = "promp_"
    """Prefix of this section's keys in the flat ``config.json`` block and in the flags."""

    clip_eps: float = 0.3
    """ProMP: likelihood-ratio clipping epsilon."""
    kl_coef: float = 5e-4
    """ProMP: weight of the KL penalty on the inner step."""
    steps: int = 5
    """ProMP: Adam steps per meta-batch."""
    lr: float = 1e-3
    """ProMP: Adam learning rate."""

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_number(f"{name}.clip_eps", self.clip_eps, 0, 1, low_open=True, high_open=True)
        check_number(f"{name}.kl_coef", self.kl_coef, 0)
        check_int(f"{name}.steps", self.steps, 1)
        check_number(f"{name}.lr", self.lr, 0, low_open=True)


OUTER_CONFIGS: dict[str, type[TRPOConfig] | type[ProMPConfig]] = {"trpo": TRPOConfig, "promp": ProMPConfig}
"""Outer-loop name -> its settings section (the field of :class:`MAMLConfig` of the same name)."""
OUTER_ALGORITHMS: tuple[str, ...] = tuple(OUTER_CONFIGS)


@dataclasses.dataclass(frozen=True)
class MAMLConfig:
    """Hyperparameters of the MAML meta-learner (defaults: the MAML paper's, ProMP's for promp)."""

    outer: Annotated[str, choice(OUTER_ALGORITHMS)] = "trpo"
    """Outer loop: trpo (trust region through the adaptation) or promp (clipped ratio, Adam)."""
    inner_steps: int = 1
    """Inner policy-gradient steps per task."""
    inner_lr: float = 0.1
    """Inner learning rate alpha (> 0)."""
    inner_objective: Annotated[str, choice(OBJECTIVES)] = "vpg"
    """Inner objective: vpg (MAML paper) or lvc (ProMP's low-variance curvature)."""
    first_order: bool = False
    """Drop the second-order terms of the meta-gradient (first-order MAML)."""
    discount: float = 0.99
    """Discount factor gamma in [0, 1]."""
    gae_lambda: float = 1.0
    """GAE lambda in [0, 1] (1.0: Monte-Carlo returns minus the linear baseline)."""
    normalize_advantages: bool = True
    """Centre and scale advantages per task (rllab's center_adv), in the inner steps, the outer loss and
    at evaluation."""
    trpo: TRPOConfig = dataclasses.field(default_factory=TRPOConfig)
    """Settings of the trpo outer loop (used when ``outer == "trpo"``)."""
    promp: ProMPConfig = dataclasses.field(default_factory=ProMPConfig)
    """Settings of the promp outer loop (used when ``outer == "promp"``)."""

    def __post_init__(self) -> None:
        check_choice("MAMLConfig.outer", self.outer, OUTER_ALGORITHMS)
        check_int("MAMLConfig.inner_steps", self.inner_steps, 1)
        check_number("MAMLConfig.inner_lr", self.inner_lr, 0, low_open=True)
        check_choice("MAMLConfig.inner_objective", self.inner_objective, OBJECTIVES)
        check_bool("MAMLConfig.first_order", self.first_order)
        check_number("MAMLConfig.discount", self.discount, 0, 1)
        check_number("MAMLConfig.gae_lambda", self.gae_lambda, 0, 1)
        check_bool("MAMLConfig.normalize_advantages", self.normalize_advantages)
        for section, section_type in OUTER_CONFIGS.items():
            if not isinstance(getattr(self, section), section_type):
                raise ValueError(
                    f"MAMLConfig.{section} must be a {section_type.__name__}, got {getattr(self, section)!r}"
                )

    @property
    def outer_config(self) -> TRPOConfig | ProMPConfig:
        """The settings of the outer loop in use (``self.trpo`` or ``self.promp``)."""
        return getattr(self, self.outer)

    # ------------------------------------------------------- the flat block

    @classmethod
    def flat_keys(cls) -> dict[str, tuple[str | None, str]]:
        """Flat key -> (section or None, field): the ``"maml"`` block of ``config.json``."""
        keys: dict[str, tuple[str | None, str]] = {}
        for field in dataclasses.fields(cls):
            if field.name in OUTER_CONFIGS:
                section_type = OUTER_CONFIGS[field.name]
                for inner in dataclasses.fields(section_type):
                    keys[section_type.FLAT_PREFIX + inner.name] = (field.name, inner.name)
            else:
                keys[field.name] = (None, field.name)
        return keys

    def to_dict(self) -> dict[str, Any]:
        """The flat, JSON-ready block of ``config.json`` (every section's keys, as before the split)."""
        return {
            key: getattr(self, field) if section is None else getattr(getattr(self, section), field)
            for key, (section, field) in self.flat_keys().items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MAMLConfig:
        """Rebuild from the flat block (:meth:`to_dict`); missing keys take their defaults.

        Raises:
            TypeError: for a key that is not a field (as the flat dataclass's constructor did).
            ValueError: for a value out of range (naming the field).
        """
        keys = cls.flat_keys()
        unknown = sorted(set(data) - set(keys))
        if unknown:
            raise TypeError(f"MAMLConfig has no field(s) {unknown}")
        top: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {name: {} for name in OUTER_CONFIGS}
        for key, value in data.items():
            section, field = keys[key]
            (top if section is None else sections[section])[field] = value
        built = {name: OUTER_CONFIGS[name](**values) for name, values in sections.items()}
        return cls(**top, **built)

    def replace(self, **changes: Any) -> MAMLConfig:
        """A copy with some flat keys (``max_kl=...``, ``promp_lr=...``) changed (validates)."""
        return self.from_dict({**self.to_dict(), **changes})

    @classmethod
    def flat(cls, **values: Any) -> MAMLConfig:
        """The config with these flat keys set, the others at their defaults: ``MAMLConfig.flat(max_kl=0.02)``."""
        return cls.from_dict(values)
