"""The evaluation protocol shared by every method that adapts by gradient steps (docs/design.md, "Evaluation protocol").

For ``num_tasks`` (40) unseen tasks of a split, drawn from a fixed evaluation
seed so that every method and every run sees the same tasks, the policy's
return is measured before adaptation (k = 0) and after each of k = 1..3
policy-gradient steps. Each step is fed by ``episodes_per_step`` (20) fresh
episodes collected with the current parameters; those episodes also give the
return reported for that k. The first step uses the method's inner learning
rate, later steps half of it (the MAML paper's protocol). All tasks are adapted
together but independently (one parameter set per task,
:func:`metarl.algorithms.adaptation.inner_step`).

:func:`evaluate_gradient_adaptation` is the per-task adaptation loop: it needs
only a policy module, its starting parameters and the adaptation
hyperparameters, so MAML, the pretrained baseline and a randomly initialised
policy use it unchanged. :func:`returns_document` builds the typed
``eval_<split>.json`` (:mod:`metarl.evaluation.document`, the schema of docs/design.md,
"Run files"), :meth:`~metarl.evaluation.document.ReturnsDocument.to_json` its JSON, and :func:`write_eval_json` writes it. :func:`evaluate_maml_run` is the
evaluator that ``metarl evaluate`` calls for ``method == "maml"`` runs.

Choices, written down:

- ``returns`` are undiscounted episode returns averaged over each task's
  episodes; ``per_task[i]["returns"]`` holds them for k = 0..3; the aggregate
  (mean, IQM, 95% stratified-bootstrap CI over tasks) comes from
  :func:`metarl.evaluation.stats.summarize`.
- ``samples_per_step``: environment steps actually taken per adaptation step,
  summed over tasks (episodes that end early count only their steps).
- ``adapt_seconds``: wall time of adapting all tasks together: sampling the
  batches that feed the gradient steps (those of k = 0..2, which also give
  these k's returns) plus the steps themselves; the last batch (the k = 3
  return only) is excluded.
- ``--samples-per-step N`` (:func:`sample_step_budget`) feeds each step by
  complete episodes until every task's steps reach ``N`` instead of by
  ``episodes_per_step`` episodes: the MAML paper's own test protocol (rllab's
  ``BatchSampler`` with ``batch_size=4000`` whole paths for the point robot).
  It differs only where episodes end early: an adapted Point2DNav policy
  that reaches its goal ends its episodes early and so gets more of them. The
  return at k is the mean over the episodes kept.
- ``--tasks FILE`` (:func:`load_tasks_file`) replaces the split's tasks by
  explicit ones (e.g. the MAML paper's own test goals, or a robot's measured
  parameters); the document's ``split`` is then ``custom``, written to
  ``eval_custom.json``, with ``tasks_file`` naming the source.
- ``params``: number of policy parameters; ``flops_per_forward``: 2 x the
  multiply-adds of the MLP's linear layers for one observation (tanh and the
  Gaussian sampling are not counted), also given as ``macs_per_forward``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from tqdm.auto import tqdm

import metarl_envs as envs
from metarl.algorithms.adaptation import (
    AdaptationSettings,
    adaptation_lrs,
    check_objective,
    inner_step,
)
from metarl.core.device import resolve_device
from metarl.core.episodes import Episodes
from metarl.core.flags import choice, device_choice, optional
from metarl.core.policy import GaussianMLPPolicy, Params, stack_params
from metarl.core.sampler import VectorEnvSampler
from metarl.core.validation import (
    ALLOW_LARGE_FLAG,
    check_int,
    check_optional_int,
    format_bytes,
    json_nesting_depth,
)
from metarl.evaluation.document import (
    ReturnsDocument,
    ReturnsProtocol,
    ReturnsSummary,
    TaskReturns,
    write_eval_json,
)
from metarl.evaluation.stats import summarize
from metarl.storage.runs import RunDir, checkpoint_progress, load_policy

EVAL_SEED = 20170  # the fixed evaluation seed: the same unseen tasks for every method and run
NUM_TASKS = 40
SAMPLE_BUDGET_MAX_ROUNDS = 4  # --samples-per-step samples at most 4 x ceil(budget / horizon) episodes per task
CUSTOM_SPLIT = "custom"  # the split label of an evaluation on explicit tasks (``--tasks FILE``)
EPISODES_PER_STEP = 20
ADAPT_STEPS = 3
TASKS_FILE_MAX_BYTES = 16 * 2**20  # a --tasks file above this needs --allow-large (a task is ~100 bytes)
TASKS_FILE_MAX_DEPTH = 8  # [{"tasks": [{"field": [..]}]}] needs 4; eval_<split>.json's per_task needs 5


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """How to evaluate: which split, how many tasks, episodes and steps, which seed.

    Its fields up to ``samples_per_step`` are also the flags of ``metarl evaluate``
    (:class:`metarl.commands.evaluate_cmd.EvaluateArgs` is derived from them), so their
    docstrings are the flags' help texts.
    """

    split: Annotated[str, choice(("test", "ood"))] = "test"
    """test (unseen tasks of the training distribution) or ood (outside the training support)."""
    num_tasks: int = NUM_TASKS
    """Number of evaluation tasks (drawn from the fixed evaluation seed)."""
    episodes_per_step: int = EPISODES_PER_STEP
    """Fresh episodes per task for each adaptation step."""
    steps: int = ADAPT_STEPS
    """Adaptation steps; returns are reported for k = 0..steps."""
    seed: int = EVAL_SEED
    """Evaluation seed (fixes the tasks and the sampling noise; keep it to compare methods)."""
    device: Annotated[str, device_choice()] = "auto"
    """auto, cpu or cuda."""
    samples_per_step: Annotated[int | None, optional("INT", "by --episodes-per-step episodes")] = None
    """Feed each adaptation step by complete episodes until every task has this many environment steps
    (the MAML paper's test protocol: 4000 for the point robot) instead of by --episodes-per-step episodes.
    For runs adapted by gradient steps (maml, pretrain, random_init)."""
    tasks: tuple[Any, ...] | None = None
    """Explicit tasks instead of the split's (then ``split`` is ``custom`` and ``num_tasks`` their count)."""
    tasks_source: str | None = None
    """Where ``tasks`` came from (a file name), recorded in the document."""

    def __post_init__(self) -> None:
        if self.tasks is not None:
            if self.split != CUSTOM_SPLIT:
                raise ValueError(f"explicit tasks are evaluated as split {CUSTOM_SPLIT!r}, got split {self.split!r}")
            if len(self.tasks) == 0 or self.num_tasks != len(self.tasks):
                raise ValueError(f"num_tasks must equal the number of explicit tasks ({len(self.tasks)}), "
                                 f"got {self.num_tasks}")
        elif self.split not in ("train", "test", "ood"):
            raise ValueError(f"split must be one of test, ood (or train), got {self.split!r}")
        for name in ("num_tasks", "episodes_per_step"):
            value = getattr(self, name)
            check_int(f"{name} (--{name.replace('_', '-')})", value, 1)
        check_optional_int("samples_per_step (--samples-per-step)", self.samples_per_step, 1)
        check_int("steps (--steps)", self.steps, 0)
        check_int("seed (--seed)", self.seed, 0)


@dataclasses.dataclass
class AdaptationResult:
    """Outcome of :func:`evaluate_gradient_adaptation`."""

    tasks: list[Any]
    returns: np.ndarray  # [tasks, steps + 1]: mean episode return per task after k steps
    samples_per_step: int
    adapt_seconds: float
    inner_lrs: list[float]
    horizon: int | None = None  # episode length sampled (None: the caller's evaluation names it)


def evaluation_tasks(family: str, split: str, num_tasks: int, seed: int = EVAL_SEED) -> list[Any]:
    """The fixed evaluation tasks of ``family``/``split`` (same for every method)."""
    return envs.distribution(family).sample(num_tasks, split, np.random.default_rng(seed))


def options_tasks(family: str, options: EvalOptions) -> list[Any]:
    """The tasks an evaluation runs on: ``options.tasks`` if given, else the split's fixed tasks.

    Raises:
        ValueError: explicit tasks of another family than ``family``.
    """
    if options.tasks is None:
        return evaluation_tasks(family, options.split, options.num_tasks, options.seed)
    families = sorted({task.to_dict()["family"] for task in options.tasks})
    if families != [family]:
        source = options.tasks_source or "the explicit tasks"
        raise ValueError(f"{source} holds tasks of {', '.join(families)}, but the run was trained on {family}; "
                         f"give tasks of {family} (see `metarl envs`)")
    return list(options.tasks)


def load_tasks_file(path: str | Path, allow_large: bool = False) -> list[Any]:
    """Tasks from a JSON file: a list of task dicts (``task.to_dict()``, with ``family``),
    ``{"tasks": [...]}``, or an ``eval_<split>.json`` (its ``per_task`` tasks).

    A file larger than :data:`TASKS_FILE_MAX_BYTES` is refused unless ``allow_large``
    (``--allow-large``); so is JSON nested deeper than :data:`TASKS_FILE_MAX_DEPTH`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a file, too large, not JSON, no tasks, or a task dict that does not
            describe a valid task (the message names its position and field).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--tasks {path} is a directory; give a JSON file of tasks")
    if not path.exists():
        raise FileNotFoundError(f"--tasks file {path} does not exist")
    size = path.stat().st_size
    if size > TASKS_FILE_MAX_BYTES and not allow_large:
        raise ValueError(
            f"--tasks file {path} holds {format_bytes(size)}, more than the {format_bytes(TASKS_FILE_MAX_BYTES)} "
            f"a tasks file may hold (about {TASKS_FILE_MAX_BYTES // 100:,} tasks); pass {ALLOW_LARGE_FLAG} to read it anyway"
        )
    try:
        text = path.read_bytes().decode("utf-8")
        depth = json_nesting_depth(text)
        if depth > TASKS_FILE_MAX_DEPTH:
            raise ValueError(f"--tasks file {path} nests lists or objects {depth} deep; a tasks file needs at most "
                             f"{TASKS_FILE_MAX_DEPTH} (a list of task objects whose fields are numbers or lists of numbers)")
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise ValueError(f"--tasks file {path} is not valid JSON ({type(error).__name__}: {error})") from None
    if isinstance(data, dict) and isinstance(data.get("per_task"), list):
        data = [entry.get("task") if isinstance(entry, dict) else entry for entry in data["per_task"]]
    elif isinstance(data, dict) and "tasks" in data:
        data = data["tasks"]
    if not isinstance(data, list) or not data:
        raise ValueError(f"--tasks file {path} must hold a non-empty list of task dicts (or {{\"tasks\": [...]}} "
                         f"or an eval_<split>.json), e.g. [{{\"family\": \"Point2DNav\", \"goal_x_m\": 0.3, "
                         f"\"goal_y_m\": -0.2}}]")
    tasks = []
    for index, entry in enumerate(data):
        try:
            tasks.append(envs.task_from_dict(entry))
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(f"--tasks file {path}, task {index}: {error}") from None
    return tasks


def sample_step_budget(
    sampler: VectorEnvSampler,
    policy: GaussianMLPPolicy,
    task_params: Params,
    tasks: Sequence[Any],
    budget: int,
    generator: torch.Generator,
) -> Episodes:
    """Complete episodes of every task until its steps reach ``budget`` (rllab's whole-path batches).

    Rounds of at most ``ceil(budget / horizon)`` episodes are sampled for all
    tasks together until every task has ``budget`` steps, or until
    :data:`SAMPLE_BUDGET_MAX_ROUNDS` times that many episodes were sampled
    (episodes are padded to one count for all tasks, so a task whose
    episodes end after a step or two must not multiply everyone's memory; it
    then keeps fewer steps than the budget). Each task keeps its episodes in
    order up to and including the one that reaches the budget; the rest are
    masked out (all-zero mask: no step, no return).
    """
    horizon = sampler.horizon
    per_round = math.ceil(budget / horizon)  # later rounds are no larger
    max_episodes = SAMPLE_BUDGET_MAX_ROUNDS * per_round
    rounds = [sampler.sample(policy, task_params, tasks, per_round, generator)]
    steps = rounds[0].mask.sum(dim=(1, 2))  # [T]
    sampled = per_round
    while bool((steps < budget).any()) and sampled < max_episodes:
        lengths = torch.cat([r.mask.sum(dim=-1) for r in rounds], dim=1)  # [T, E]
        mean_length = lengths.mean(dim=1).clamp(min=1.0)  # [T]
        missing = ((budget - steps).clamp(min=0.0) / mean_length).ceil()
        count = max(1, min(per_round, max_episodes - sampled, int(missing.max())))
        more = sampler.sample(policy, task_params, tasks, count, generator)
        sampled += count
        rounds.append(more)
        steps = steps + more.mask.sum(dim=(1, 2))
    if len(rounds) == 1:  # every episode of it begins before step (E - 1) * horizon < budget: all kept
        return rounds[0]
    observations = torch.cat([r.observations for r in rounds], dim=1)
    actions = torch.cat([r.actions for r in rounds], dim=1)
    rewards = torch.cat([r.rewards for r in rounds], dim=1)
    mask = torch.cat([r.mask for r in rounds], dim=1)  # [T, E, H]
    lengths = mask.sum(dim=-1)  # [T, E]
    keep = ((torch.cumsum(lengths, dim=1) - lengths) < budget).to(mask.dtype)  # begun before the budget was met
    return Episodes(
        observations=observations * keep[..., None, None],
        actions=actions * keep[..., None, None],
        rewards=rewards * keep[..., None],
        mask=mask * keep[..., None],
        tasks=list(tasks),
    )


def mean_episode_returns(episodes: Episodes) -> torch.Tensor:
    """Mean undiscounted return over each task's episodes that took at least one step  # [T]."""
    taken = (episodes.mask[..., 0] > 0).to(episodes.rewards.dtype)  # [T, E]: every episode takes its first step
    return (episodes.returns * taken).sum(dim=1) / taken.sum(dim=1).clamp(min=1.0)


def evaluate_gradient_adaptation(
    policy: GaussianMLPPolicy,
    params: Params,
    family: str,
    inner_lr: float,
    options: EvalOptions,
    *,
    inner_objective: str = "vpg",
    discount: float = 0.99,
    gae_lambda: float = 1.0,
    horizon: int | None = None,
    progress: bool = True,
    normalize_advantages: bool = True,
) -> AdaptationResult:
    """Return before and after k = 1..steps gradient steps on each evaluation task.

    Args:
        policy: the architecture (never mutated).
        params: starting parameters, module-shaped (shared by every task).
        family: the task family.
        inner_lr: the first step's learning rate (later steps use half).
        options: split, number of tasks, episodes per step, steps, seed, device.
        inner_objective, discount, gae_lambda: as in :func:`metarl.algorithms.adaptation.inner_step`.
        horizon: episode length (default: the family's).
        progress: show a progress bar.
        normalize_advantages: centre and scale advantages per task (as the run trained).
    """
    if not inner_lr > 0:
        raise ValueError(f"inner_lr must be > 0, got {inner_lr}")
    check_objective(inner_objective)
    device = resolve_device(options.device)
    tasks = options_tasks(family, options)
    sampler = VectorEnvSampler(family, options.num_tasks, device, horizon=horizon)
    generator = torch.Generator().manual_seed(options.seed)
    policy = policy.to(device)
    task_params = stack_params({name: value.detach().to(device) for name, value in params.items()}, len(tasks))
    lrs = adaptation_lrs(inner_lr, options.steps)
    returns = np.zeros((len(tasks), options.steps + 1))
    samples: list[int] = []
    adapt_seconds = 0.0
    bar = tqdm(range(options.steps + 1), desc=f"evaluate {family} {options.split}", disable=not progress, leave=False)
    for k in bar:
        start = time.perf_counter()
        if options.samples_per_step is None:
            episodes = sampler.sample(policy, task_params, tasks, options.episodes_per_step, generator)
        else:
            episodes = sample_step_budget(sampler, policy, task_params, tasks, options.samples_per_step, generator)
        returns[:, k] = mean_episode_returns(episodes).double().cpu().numpy()
        if k < options.steps:
            samples.append(episodes.num_steps)
            task_params = inner_step(
                policy, task_params, episodes, lrs[k], inner_objective, discount, gae_lambda,
                normalize_advantages=normalize_advantages,
            )
            adapt_seconds += time.perf_counter() - start
        bar.set_postfix(k=k, mean_return=f"{returns[:, k].mean():.1f}")
    sampler.close()
    samples_per_step = int(round(float(np.mean(samples)))) if samples else 0
    return AdaptationResult(tasks, returns, samples_per_step, adapt_seconds, lrs, horizon=sampler.horizon)


def mlp_multiply_adds(policy: GaussianMLPPolicy) -> int:
    """Multiply-adds of one forward pass of the policy's MLP for one observation."""
    sizes = (policy.obs_dim, *policy.hidden_sizes, policy.act_dim)
    return int(sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)))


def parameter_count(policy: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in policy.parameters() if p.requires_grad))


def returns_document(
    method: str,
    family: str,
    options: EvalOptions,
    result: AdaptationResult,
    policy: GaussianMLPPolicy,
    extra: Mapping[str, Any] | None = None,
    progress: bool = False,
    horizon: int | None = None,
    trained: tuple[int | None, int | None] = (None, None),
) -> ReturnsDocument:
    """The typed ``eval_<split>.json`` (:class:`metarl.evaluation.document.ReturnsDocument`) of an evaluation.

    ``extra`` holds the method's own keys; those named ``params``, ``flops_per_forward`` or
    ``macs_per_forward`` replace the counts taken from ``policy``. ``horizon`` is the episode
    length sampled: by default ``result.horizon``, else the family's registered horizon (what a
    sampler given no horizon uses, e.g. fine-tuning's). With ``progress``, a status line on stderr
    names the bootstrap of the confidence intervals while it runs (seconds, after the evaluation's
    bar ends). ``trained`` is the training iteration and environment steps of the checkpoint
    evaluated (:func:`metarl.storage.policy_store.checkpoint_progress`), so that an evaluation of a
    run trained further since can be told apart.
    """
    if horizon is None:
        horizon = result.horizon if result.horizon is not None else envs.family_spec(family).horizon
    with tqdm(total=1, desc="bootstrap 95% confidence intervals over the tasks", disable=not progress,
              leave=False, bar_format="{desc} ({elapsed})"):
        summary = summarize(result.returns, seed=options.seed)
    macs = mlp_multiply_adds(policy)
    fields = dict(extra or {})
    counts = {"params": parameter_count(policy), "flops_per_forward": 2 * macs, "macs_per_forward": macs}
    counts.update({name: fields.pop(name) for name in list(counts) if name in fields})
    return ReturnsDocument(
        method=method,
        protocol=ReturnsProtocol(
            family=family,
            split=options.split,
            num_tasks=len(result.tasks),
            episodes_per_step=options.episodes_per_step,
            steps=result.returns.shape[1] - 1,
            samples_per_step_budget=options.samples_per_step,
            inner_lrs=tuple(result.inner_lrs),
            eval_seed=options.seed,
            horizon=horizon,
            tasks_file=options.tasks_source if options.tasks is not None else None,
        ),
        returns=ReturnsSummary(summary["mean"], summary["iqm"], summary["ci95"], summary["mean_ci95"]),
        per_task=tuple(TaskReturns(task.to_dict(), tuple(float(v) for v in row))
                       for task, row in zip(result.tasks, result.returns, strict=True)),
        samples_per_step=result.samples_per_step,
        adapt_seconds=float(result.adapt_seconds),
        method_fields=fields,
        trained_iteration=trained[0],
        trained_env_steps=trained[1],
        **counts,
    )


def check_writable(directory: Path, what: str) -> None:
    """Raise ``OSError`` naming ``directory`` unless a file can be created in it (tried, then removed)."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".metarl-write-test-"):
            pass
    except OSError as error:
        raise OSError(error.errno, f"{error.strerror}: cannot write {what} there", str(directory)) from None


def format_returns_table(
    returns: Sequence[float], reference: Sequence[float] | None = None, label: str = "ours"
) -> str:
    """A small text table of mean return per k, with a reference row (e.g. the paper's)."""
    header = "k".ljust(14) + "".join(f"{k:>10d}" for k in range(len(returns)))
    lines = [header, label.ljust(14) + "".join(f"{v:>10.1f}" for v in returns)]
    if reference is not None:
        lines.append("paper".ljust(14) + "".join(f"{v:>10.1f}" for v in reference))
    return "\n".join(lines)


def adaptation_settings(config: Mapping[str, Any]) -> AdaptationSettings:
    """How a run that adapts by policy-gradient steps adapts, from its ``config.json``
    (:meth:`metarl.algorithms.adaptation.AdaptationSettings.from_config`): the settings
    ``metarl evaluate``, ``metarl render``, ``metarl train random-init --like`` and
    :func:`metarl.api.load_run` use.

    Raises:
        ValueError: the config names no ``inner_lr`` under 'maml' or 'adaptation'.
    """
    return AdaptationSettings.from_config(config)


def evaluated_checkpoint(run_dir: RunDir) -> tuple[int | None, int | None]:
    """The training iteration and environment steps of the run's checkpoint, for the evaluation document
    (:func:`metarl.storage.policy_store.checkpoint_progress`); read before evaluating, and (None, None)
    where they cannot be read, so that an evaluation is never lost for the want of them."""
    return checkpoint_progress(run_dir) or (None, None)


def evaluate_gradient_run(
    method: str,
    run_dir: RunDir,
    config: Mapping[str, Any],
    options: EvalOptions,
    progress: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a run that adapts its stored policy by gradient steps and write its ``eval_<split>.json``.

    The run's policy (:func:`metarl.storage.runs.load_policy`) is adapted with the run's
    :func:`adaptation_settings` by :func:`evaluate_gradient_adaptation`; ``extra`` keys are added
    to the document. MAML, pretrain and random-init runs are evaluated by it.
    """
    policy = load_policy(run_dir, config)
    trained = evaluated_checkpoint(run_dir)
    result = evaluate_gradient_adaptation(
        policy, policy.params(), config["family"], options=options, horizon=config.get("horizon"),
        progress=progress, **adaptation_settings(config).keywords(),
    )
    document = returns_document(method, config["family"], options, result, policy, extra=extra, progress=progress,
                                trained=trained).to_json()
    write_eval_json(run_dir, document)
    return document


def evaluate_maml_run(run_dir: RunDir, config: Mapping[str, Any], options: EvalOptions, progress: bool = True) -> dict:
    """Evaluator for ``method == "maml"`` runs: adapt from the meta-learned parameters."""
    return evaluate_gradient_run("maml", run_dir, config, options, progress)
