"""The method registry: one entry per method says how it trains, adapts, is evaluated and rendered.

A method is one module under ``metarl/methods/`` holding one :class:`Method`; the
CLI (``metarl train <word>``, ``evaluate``, ``compare``, ``render``), the studies
and the Python API look methods up here and nowhere else (docs/design.md,
"Methods"). Entries name their functions as ``"module:function"`` strings so that
looking a method up imports nothing heavy (torch, stable-baselines3) until it is used.

A run records its method in ``config.json["method"]``; :func:`get` maps that
value back to its entry. Third-party methods call :func:`register` (from a
plugin module, see :func:`metarl_envs.load_plugins`, or from Python before
calling the CLI's ``main``).
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable
from typing import Any

from metarl.core.errors import UserError

_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclasses.dataclass(frozen=True)
class Method:
    """How one method trains, adapts, is evaluated and what policy a video shows."""

    name: str
    """The run's ``config.json["method"]`` value (e.g. ``"maml"``, ``"random_init"``)."""
    train_word: str
    """Its training command: ``metarl train <train_word>`` (e.g. ``"random-init"``)."""
    summary: str
    """One line for ``metarl train``'s list of commands."""
    train_args: str
    """``"module:Class"``: the frozen dataclass of its training flags (tyro reads it)."""
    train: str
    """``"module:function"``: ``train(args) -> int`` runs the training from parsed flags."""
    evaluate: str
    """``"module:function"``: ``evaluate(run_dir, config, options, progress) -> document``."""
    policies: str | None = None
    """``"module:function"``: the policy a video shows at each k; None: not rendered as a policy."""
    resumable: bool = True
    """Whether ``--resume`` continues a partial run (otherwise a partial run starts over)."""
    kind: str = "returns"
    """What its evaluation measures: ``"returns"`` (return at k = 0..K) or ``"identification"``."""

    def __post_init__(self) -> None:
        for field in ("name", "train_word", "summary"):
            if not isinstance(getattr(self, field), str) or not getattr(self, field):
                raise ValueError(f"Method.{field} must be a non-empty string, got {getattr(self, field)!r}")
        for field in ("train_args", "train", "evaluate", "policies"):
            value = getattr(self, field)
            if value is None and field == "policies":
                continue
            if not isinstance(value, str) or not _TARGET.match(value):
                raise ValueError(f"Method.{field} must be 'module:attribute', got {value!r}")
        if self.kind not in ("returns", "identification"):
            raise ValueError(f"Method.kind must be 'returns' or 'identification', got {self.kind!r}")

    def load(self, field: str) -> Any:
        """The object a ``"module:attribute"`` field names (imported on first use)."""
        target = getattr(self, field)
        if target is None:
            raise UserError(f"method {self.name!r} has no {field}")
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


# built-in methods: name -> the module under metarl.methods holding its METHOD
_BUILTIN: dict[str, str] = {
    "maml": "metarl.methods.maml",
    "pretrain": "metarl.methods.pretrain",
    "finetune": "metarl.methods.finetune",
    "protonet": "metarl.methods.protonet",
    "random_init": "metarl.methods.random_init",
}
_REGISTRY: dict[str, Method] = {}


def _load_builtins() -> None:
    for name, module in _BUILTIN.items():
        if name not in _REGISTRY:
            _REGISTRY[name] = importlib.import_module(module).METHOD


def register(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to the registry (``ValueError`` if its name or train word is taken)."""
    if not isinstance(method, Method):
        raise TypeError(f"register() takes a metarl.methods.Method, got {type(method).__name__}")
    _load_builtins()
    if not replace:
        for other in _REGISTRY.values():
            if other.name == method.name or other.train_word == method.train_word:
                raise ValueError(
                    f"method {method.name!r} (metarl train {method.train_word}) clashes with the registered "
                    f"method {other.name!r} (metarl train {other.train_word}); pass replace=True to replace it"
                )
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a registered method (tests and plugins that register temporarily)."""
    _REGISTRY.pop(name, None)


def methods() -> list[Method]:
    """Every registered method, built-ins first, in registration order."""
    _load_builtins()
    return list(_REGISTRY.values())


def get(name: Any) -> Method:
    """The method of a run's ``config.json["method"]`` (``UserError`` naming the known ones)."""
    _load_builtins()
    if not isinstance(name, str) or name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise UserError(f"unknown method {name!r}; known methods: {known}")
    return _REGISTRY[name]


def by_train_word(word: str) -> Method:
    """The method trained by ``metarl train <word>``."""
    for method in methods():
        if method.train_word == word:
            return method
    known = ", ".join(m.train_word for m in methods())
    raise UserError(f"unknown training command {word!r}; metarl train takes: {known}")


def call(method: Method, field: str, *args: Any, **kwargs: Any) -> Any:
    """Call the function a method's field names."""
    function: Callable[..., Any] = method.load(field)
    return function(*args, **kwargs)
