"""metarl: meta-reinforcement learning for robot control.

``import metarl`` registers every task family's gymnasium id (``MetaRL/<Family>-v0``),
so ``gym.make("MetaRL/HalfCheetahVel-v0")`` works after it. The names below are the
documented Python API (docs/python-api.md); each is imported on first use, so
``import metarl`` itself stays light. Learning, evaluation, rendering and the
command line are built on the task suite through its task protocol only
(docs/design.md, "Architecture").
"""

from __future__ import annotations

import importlib
from typing import Any

import metarl_envs as _envs  # registers the gymnasium ids

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    # task families, tasks and splits
    "SPLITS": "metarl_envs",
    "Task": "metarl_envs",
    "TaskDistribution": "metarl_envs",
    "distribution": "metarl_envs",
    "env_id": "metarl_envs",
    "families": "metarl_envs",
    "register_family": "metarl_envs",
    "load_plugins": "metarl_envs",
    "sample_tasks": "metarl.api",
    "collect_contexts": "metarl.identification.contexts",
    "evaluation_tasks": "metarl.evaluation.protocol",
    # single and batched envs
    "make_env": "metarl.api",
    "make_vector_env": "metarl.api",
    # training from Python
    "MAMLConfig": "metarl.algorithms.maml.learner",
    "MAMLRunConfig": "metarl.algorithms.presets",
    "maml_preset": "metarl.algorithms.presets",
    "train_maml": "metarl.algorithms.maml.training",
    "train_pretrain": "metarl.algorithms.pretrain",
    "FinetuneConfig": "metarl.algorithms.finetune",
    "ProtoNetConfig": "metarl.identification.config",
    # runs, adaptation and evaluation
    "RunDir": "metarl.storage.runs",
    "AdaptiveRun": "metarl.api",
    "load_run": "metarl.api",
    "VectorEnvSampler": "metarl.core.sampler",
    "Episodes": "metarl.core.episodes",
    "adapt": "metarl.algorithms.adaptation",
    "EvalOptions": "metarl.evaluation.protocol",
    "summarize": "metarl.evaluation.stats",
    # task identification
    "TaskIdentifier": "metarl.identification.identifier",
}
# public name -> (module, attribute) where the public name differs from the attribute
_RENAMED: dict[str, tuple[str, str]] = {
    "evaluate": ("metarl.methods.dispatch", "evaluate_run"),
    "train_finetune": ("metarl.algorithms.finetune", "train_run"),
    "train_protonet": ("metarl.identification.run", "train_run"),
}

__all__ = sorted([*_LAZY, *_RENAMED, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _RENAMED:
        module, attribute = _RENAMED[name]
        value = getattr(importlib.import_module(module), attribute)
    else:
        raise AttributeError(f"module 'metarl' has no attribute {name!r}")
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


del annotations, _envs
