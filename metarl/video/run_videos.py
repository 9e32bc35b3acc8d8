"""Videos of a trained run: one panel per number of adaptation steps k, side by side.

``metarl render RUN_DIR --split test|ood --task-index I --steps 0,1,3`` lands here.
The task is number ``I`` of the split's fixed evaluation tasks (the same list
``metarl evaluate`` uses, :func:`metarl.evaluation.protocol.evaluation_tasks`), so a
video shows a task whose numbers are in ``eval_<split>.json``.

How a run's policy after k steps is obtained depends on its method: the method
registry's entry (:mod:`metarl.methods`, ``Method.policies``) names a provider
``(run_dir, config, task, steps, options) -> dict[int, PolicyFn]``.

For methods that adapt by policy-gradient steps (``maml``, ``pretrain``, ``random_init``),
:func:`gradient_adapted_params` follows the evaluation protocol of docs/design.md, "Evaluation protocol" on the one task: ``episodes_per_step``
fresh episodes per step, adapted with the run's
:class:`~metarl.algorithms.adaptation.AdaptationSettings` (the first step at the run's
inner lr, later ones at half of it), read as ``metarl evaluate`` reads them. The sampling noise of
one task alone differs from that of the 40-task evaluation, so the adapted
weights are a fresh draw of the same procedure, not the evaluation's own.

A task-identification run (``Method.kind == "identification"``: ProtoNet, no policy) gives one
panel instead: the robot acting at random, as when its contexts were collected, with the variant
the identifier picks from the transitions seen so far (:func:`protonet_panel`).

Each panel shows the policy acting (stochastically by default, as evaluated),
under a caption band: the family, split, task index and the task, and a legend
of the picture's markers (Point2DNav: which dot is the goal) across the top;
the method, k and the running return above each panel. Episodes start from the same reset seed in every panel,
so the panels differ only by the policy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from metarl.core.validation import check_memory, check_number, step_bytes
from metarl.video import render

if TYPE_CHECKING:
    from metarl.algorithms.adaptation import AdaptationSettings

@dataclasses.dataclass(frozen=True)
class RenderOptions:
    """What to render of a run."""

    split: str = "test"
    """Evaluation split the task comes from: test or ood (as `metarl evaluate`)."""
    task_index: int = 0
    """Index of the task among the split's fixed evaluation tasks."""
    steps: tuple[int, ...] = (0, 1, 3)
    """Numbers of adaptation steps k to show, one panel each."""
    num_tasks: int = 40
    """Number of evaluation tasks the index refers to (as in `metarl evaluate`)."""
    episodes_per_step: int = 20
    """Fresh episodes per adaptation step."""
    seed: int = 20170
    """Evaluation seed: fixes the task list, the adaptation episodes and the video's episode."""
    width: int = 256
    """Panel width in pixels (a multiple of 16)."""
    height: int = 192
    """Panel height in pixels (a multiple of 16), without the caption band above the panels."""
    deterministic: bool = False
    """Show the mean action instead of sampling (evaluation samples)."""
    max_steps: int | None = None
    """Cut the episode after this many steps (default: the run's horizon)."""
    frame_stride: int = 1
    """Keep every n-th step in the video (smaller files)."""
    fps: float | None = None
    """Frames per second of the video (default: real time divided by frame_stride)."""
    device: str = "auto"
    """Device for the adaptation steps: auto, cpu or cuda."""
    quality: float = 6.0
    """mp4 quality, 0 (smallest file) to 10 (best); ignored for gif."""
    progress: bool = False
    """Show progress bars (adaptation, episodes, encoding) on stderr."""

    def __post_init__(self) -> None:
        if self.split not in ("test", "ood"):
            raise ValueError(f"split must be one of test, ood, got {self.split!r}")
        if not self.steps:
            raise ValueError("steps must name at least one k, e.g. 0,1,3")
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in self.steps):
            raise ValueError(f"steps must be non-negative integers, got {self.steps}")
        for name in ("num_tasks", "episodes_per_step", "frame_stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.width % 16 or self.height % 16 or self.width < 64 or self.height < 64:
            raise ValueError(
                f"width and height must be multiples of 16 and >= 64, got {self.width}x{self.height}"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        check_number("quality (--quality)", self.quality, 0, 10)
        if self.fps is not None:
            check_number("fps (--fps)", self.fps, 0, low_open=True)


@dataclasses.dataclass(frozen=True)
class RenderResult:
    """What :func:`render_run` wrote."""

    path: Path
    frames: int
    size: tuple[int, int]  # (height, width) of the video
    returns: dict[int, float]  # k -> return of the episode shown
    task: Any


def describe_task(task: Any, max_chars: int = 38) -> str:
    """A short one-line description of a task for a panel.

    Scalar fields are printed as ``name=value``; vector fields (per-body
    multipliers) as their range, ``name x[lo-hi]``. Cut with an ellipsis
    beyond ``max_chars``.
    """
    parts = []
    for field in dataclasses.fields(task):
        value = getattr(task, field.name)
        name = field.name.removesuffix("_multiplier")
        if isinstance(value, (tuple, list)) and value:
            array = np.asarray(value, dtype=np.float64)
            parts.append(f"{name} x[{array.min():.2g}-{array.max():.2g}]")
        elif isinstance(value, float):
            parts.append(f"{name}={value:.3g}")
        else:
            parts.append(f"{name}={value}")
    text = ", ".join(parts)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def select_task(family: str, options: RenderOptions) -> Any:
    """Task ``options.task_index`` of the split's evaluation tasks.

    Raises:
        ValueError: the index is outside ``0..num_tasks-1`` (or the family has no such split).
    """
    from metarl.evaluation.protocol import evaluation_tasks

    if not 0 <= options.task_index < options.num_tasks:
        raise ValueError(
            f"--task-index {options.task_index} is outside the {options.split} split's evaluation "
            f"tasks: choose 0..{options.num_tasks - 1} (or raise --num-tasks)"
        )
    tasks = evaluation_tasks(family, options.split, options.num_tasks, options.seed)
    return tasks[options.task_index]


def gradient_adapted_params(
    policy: Any,
    params: Mapping[str, Any],
    family: str,
    task: Any,
    steps: int,
    settings: AdaptationSettings,
    *,
    episodes_per_step: int,
    seed: int,
    horizon: int | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Parameters after k = 0..steps policy-gradient steps on one task (docs/design.md,
    "Evaluation protocol"), adapted with ``settings`` as ``metarl evaluate`` adapts
    (:func:`metarl.evaluation.protocol.adaptation_settings`).

    Returns:
        ``steps + 1`` parameter dicts (module-shaped, detached, on CPU); entry k
        is the policy after k steps.
    """
    import torch

    from metarl.algorithms.adaptation import inner_step
    from metarl.core.device import resolve_device
    from metarl.core.policy import stack_params
    from metarl.core.sampler import VectorEnvSampler

    torch_device = resolve_device(device)
    policy = policy.to(torch_device)
    task_params = stack_params({n: v.detach().to(torch_device) for n, v in params.items()}, 1)
    sequence = [{n: v[0].detach().cpu() for n, v in task_params.items()}]
    if steps == 0:
        return sequence
    sampler = VectorEnvSampler(family, 1, torch_device, horizon=horizon)
    generator = torch.Generator().manual_seed(seed)
    try:
        for lr in tqdm(settings.lrs(steps), desc="adapting", unit="step", disable=not progress, leave=False):
            episodes = sampler.sample(policy, task_params, [task], episodes_per_step, generator)
            task_params = inner_step(
                policy, task_params, episodes, lr, settings.inner_objective, settings.discount,
                settings.gae_lambda, normalize_advantages=settings.normalize_advantages,
            )
            sequence.append({n: v[0].detach().cpu() for n, v in task_params.items()})
    finally:
        sampler.close()
    return sequence


def gradient_run_policies(
    run_dir: Any, config: Mapping[str, Any], task: Any, steps: Sequence[int], options: RenderOptions
) -> dict[int, render.PolicyFn]:
    """Policies after each k in ``steps`` of a run that adapts by policy-gradient steps.

    The run's policy (``metarl.storage.runs.load_policy``) is adapted with the run's
    settings (:func:`metarl.evaluation.protocol.adaptation_settings`), as ``metarl evaluate`` does.
    """
    from metarl.evaluation.protocol import adaptation_settings
    from metarl.storage.runs import load_policy

    policy = load_policy(run_dir, config)
    sequence = gradient_adapted_params(
        policy,
        policy.params(),
        config["family"],
        task,
        max(steps),
        adaptation_settings(config),
        episodes_per_step=options.episodes_per_step,
        seed=options.seed,
        horizon=run_horizon(config),
        device=options.device,
        progress=options.progress,
    )
    policy = policy.to("cpu")
    import gymnasium as gym

    import metarl_envs as envs

    action_space = gym.make(envs.env_id(config["family"])).action_space
    return {
        k: render.gaussian_policy_fn(
            policy, sequence[k], deterministic=options.deterministic, seed=options.seed + k,
            action_space=action_space,
        )
        for k in steps
    }


def finetune_run_policies(
    run_dir: Any, config: Mapping[str, Any], task: Any, steps: Sequence[int], options: RenderOptions
) -> dict[int, render.PolicyFn]:
    """Policies of a fine-tune (stable-baselines3) run after k budget chunks of fine-tuning.

    A fresh copy of the pretrained model gets the run's recipe (freeze, new
    head, learning rate) and is fine-tuned on the task for ``max(steps)``
    chunks of ``episodes_per_step`` episodes (:func:`metarl.algorithms.finetune.adapt.prepare_finetune`,
    as its evaluation does); the weights after each requested k are kept and
    rebuilt as separate policies.
    """
    import torch

    from metarl.algorithms import finetune
    from metarl.core.device import resolve_device

    run_config, spec, state = finetune.load_run(run_dir.path)
    num_steps = max(steps)
    recipe = dataclasses.replace(
        run_config.recipe, episodes_per_step=options.episodes_per_step, num_steps=max(num_steps, 1)
    )
    device = resolve_device(options.device)
    chunk = recipe.episodes_per_step * envs_horizon(spec.family)
    states: dict[int, dict[str, Any]] = {}
    bar = tqdm(total=num_steps * chunk, desc=f"fine-tuning {spec.algo} ({num_steps} x {chunk} steps)",
               unit="step", disable=not options.progress, leave=False)
    with finetune.isolated_global_rng(options.seed), bar:
        model, venv = finetune.prepare_finetune(spec, state, task, recipe, options.seed, device)
        try:
            for k in range(num_steps + 1):
                if k > 0:
                    model.learn(total_timesteps=chunk, reset_num_timesteps=False, callback=finetune.StepProgress(bar))
                if k in steps:
                    states[k] = finetune.model_state(model, venv)
        finally:
            venv.close()
    box = render.make_render_env(spec.family).action_space
    low, high = np.asarray(box.low, np.float64), np.asarray(box.high, np.float64)
    policies = {}
    for k, weights in states.items():
        model_k, normalizer = finetune.load_policy(spec, weights, device)
        generator = (
            None if options.deterministic else torch.Generator().manual_seed(options.seed + k)
        )

        def act(
            obs: np.ndarray, model=model_k, normalizer=normalizer, generator=generator
        ) -> np.ndarray:
            batch = np.asarray(obs, dtype=np.float64)[None]  # [1, obs_dim]
            if normalizer is not None:
                batch = normalizer.normalize_obs(batch)
            obs_t = torch.as_tensor(batch, dtype=torch.float32, device=model.device)
            action = finetune.policy_actions(model, obs_t, generator).cpu().numpy()  # [1, act_dim]
            return finetune.rescale_action(action, low, high)[0]

        policies[k] = act
    return policies


def envs_horizon(family: str) -> int:
    """The registered horizon of ``family``."""
    import metarl_envs as envs

    return int(envs.family_spec(family).horizon)


def run_horizon(config: Mapping[str, Any]) -> int | None:
    """The episode length a run was trained with (None: the family's registered horizon)."""
    horizon = config.get("horizon", config.get("sampling", {}).get("horizon"))
    return None if horizon is None else int(horizon)


def default_output(run_dir: str | os.PathLike[str], options: RenderOptions) -> Path:
    """``RUN_DIR/render_<split>_task<I>_k<steps>.mp4``."""
    steps = "-".join(map(str, options.steps))
    return Path(run_dir) / f"render_{options.split}_task{options.task_index}_k{steps}.mp4"


IDENTIFICATION_WINDOW = 64
"""Transitions (the most recent) the ProtoNet overlay identifies from, as in its evaluation's largest context."""


def protonet_candidates(
    family: str, split: str, task: Any, options: RenderOptions, way: int
) -> list[Any]:
    """The variants a ProtoNet video chooses among; ``task`` is always one of them.

    Discrete families (HalfCheetahCrippled): every distinct variant of the train
    split and of ``split`` (the novel ood ones beside the trained ones).
    Continuous families: ``way`` evaluation tasks of the split, ``task`` included.
    """
    from metarl.evaluation.protocol import evaluation_tasks
    from metarl.identification.contexts import distinct_variants

    train_variants = distinct_variants(family, "train")
    split_variants = distinct_variants(family, split)
    if train_variants is not None and split_variants is not None:
        unique = {t.task_id: t for t in [*train_variants, *split_variants]}
        return list(unique.values())
    others = [
        t for t in evaluation_tasks(family, split, options.num_tasks, options.seed) if t != task
    ]
    return [*others[: max(1, way - 1)], task]


def protonet_panel(run: Any, task: Any, options: RenderOptions) -> render.Panel:
    """One panel of a ProtoNet run: the robot acting with the behaviour its contexts come
    from (uniform random actions, or the run's ``behaviour_run`` policy), with the variant
    the identifier picks from the transitions seen so far.

    Prototypes are the mean embeddings of ``shot`` support contexts (the run's
    context size) collected on each candidate variant
    (:func:`protonet_candidates`); at step t the identifier embeds the last
    :data:`IDENTIFICATION_WINDOW` transitions ``(s, a, r, s')`` and picks the
    nearest prototype.
    """
    from metarl.identification.contexts import collect_contexts
    from metarl.identification.identifier import TaskIdentifier, load_trained
    from metarl.identification.run import behaviour_from_run

    trained = load_trained(run.path)
    config = trained.config
    identifier = TaskIdentifier(trained.encoder, config.family)
    behaviour_run = run.read_config().get("behaviour_run")
    behaviour = behaviour_from_run(behaviour_run, config.family)  # None: uniform random actions
    candidates = protonet_candidates(config.family, options.split, task, options, config.way)
    support = collect_contexts(
        config.family, candidates, config.shot, config.context_size, behaviour=behaviour,
        seed=options.seed, progress=options.progress,
    )  # fmt: skip  # [variants, shot, context_size, transition_dim]
    prototypes = identifier.prototypes(support)  # [variants, embedding]
    truth = next(i for i, candidate in enumerate(candidates) if candidate == task)

    env = render.make_render_env(config.family)
    if behaviour is None:
        act = render.random_policy_fn(env.action_space, options.seed)
    else:
        rng = np.random.default_rng(options.seed)

        def act(obs: np.ndarray) -> np.ndarray:
            return np.asarray(behaviour(np.asarray(obs, np.float64)[None], rng))[0]

    frames = render.FrameRenderer(options.width, options.height)
    try:
        episode = render.rollout(
            env, act, frames, task=task, seed=options.seed, max_steps=options.max_steps
        )
    finally:
        frames.close()
        env.close()
    transitions = np.concatenate(
        [
            episode.observations[:-1],
            episode.actions,
            episode.rewards[:, None],
            episode.observations[1:],
        ],
        axis=1,
    )  # [steps, transition_dim]: (s, a, r, s')
    lines: list[tuple[str, ...]] = [("identified: -  (no transition yet)",)]
    correct = 0
    for t in range(1, episode.steps + 1):
        index, _ = identifier.identify(
            transitions[max(0, t - IDENTIFICATION_WINDOW) : t], prototypes
        )
        correct += index == truth
        mark = "right" if index == truth else "wrong"
        lines.append(
            (
                f"identified: {describe_task(candidates[index], 60)} ({mark})",
                f"right on {correct}/{t} steps, {len(candidates)} candidates",
            )
        )
    header = (
        f"true: {describe_task(task, 60)}",
        "protonet, " + ("random actions" if behaviour is None else "behaviour policy"),
    )
    return render.Panel(episode, header, step_lines=tuple(lines))


def video_title(family: str, task: Any, options: RenderOptions) -> tuple[str, ...]:
    """The caption line above every panel: family, split, task index and the task."""
    return (f"{family} {options.split} #{options.task_index}: {describe_task(task, 100)}",)


def _encoding_progress(
    panels: Sequence[render.Panel], options: RenderOptions, title: Sequence[str],
    legend: Sequence[render.LegendItem],
) -> Any:
    """The video's frames (:func:`metarl.video.render.compose_frames`), counted on a bar while they are encoded."""
    frames = render.compose_frames(panels, frame_stride=options.frame_stride, title=title, legend=legend)
    total = render.video_frame_count(panels, options.frame_stride)
    return tqdm(frames, total=total, desc="writing video", unit="frame", disable=not options.progress,
                leave=False)


def render_run(
    run_dir: str | os.PathLike[str],
    options: RenderOptions,
    out: str | os.PathLike[str] | None = None,
    allow_large: bool = False,
    *,
    lookup: Callable[[str], Any],
) -> RenderResult:
    """Render a run's policy on one evaluation task after each k of ``options.steps``.

    ``lookup`` maps the run's ``config.json["method"]`` to its method registry entry
    (:class:`metarl.methods.Method`: ``kind``, and ``load("policies")``, the provider of its policy
    per k) or raises ``ValueError`` when the method cannot be rendered;
    :func:`metarl.methods.dispatch.render_run` passes the registry's.

    Checks everything that can be wrong before any long work: the output path,
    the run directory and its checkpoint, the method, the task index, the
    memory the episodes and frames need (above half the machine's memory only
    with ``allow_large``), and that headless rendering works. A video written
    inside the run directory holds the directory's writer lock
    (:func:`metarl.storage.runs.run_dir_lock`) meanwhile.

    Raises:
        FileNotFoundError: no run at ``run_dir`` or no checkpoint in it.
        ValueError: unwritable output, unknown method, task index outside the split.
        metarl.video.render.RenderingUnavailableError: no headless OpenGL backend works.
    """
    from metarl.core.interrupts import sigterm_as_interrupt
    from metarl.storage.runs import RunDir, run_dir_lock

    target = render.check_video_path(out if out is not None else default_output(run_dir, options))
    run = RunDir(run_dir)
    config = run.read_config()
    checkpoint_dir = run.checkpoint_path.parent
    if not checkpoint_dir.is_dir() or not any(checkpoint_dir.glob("*.safetensors")):
        raise FileNotFoundError(
            f"{run.path} holds no checkpoint (no {checkpoint_dir}/*.safetensors): the run never saved "
            "one; train it (or resume it) until it writes a checkpoint"
        )
    check_render_memory(config, options, allow_large)
    with contextlib.ExitStack() as stack:
        stack.enter_context(sigterm_as_interrupt())
        if target.resolve().is_relative_to(run.path.resolve()):
            stack.enter_context(run_dir_lock(run.path, create=False))
        return _render(run, config, options, target, lookup)


def check_render_memory(config: Mapping[str, Any], options: RenderOptions, allow_large: bool = False) -> None:
    """Refuse a render whose adaptation episodes and frames would need more than half the memory."""
    from metarl.core.sampler import env_dims

    family = config["family"]
    obs_dim, act_dim = env_dims(family)
    horizon = run_horizon(config) or envs_horizon(family)
    max_steps = options.max_steps or horizon
    frames = len(options.steps) * (max_steps // options.frame_stride + 1) * options.width * options.height * 3
    episodes = options.num_tasks * options.episodes_per_step * horizon * 2 * step_bytes(obs_dim, act_dim)
    check_memory(
        "the render", frames + episodes,
        f"--num-tasks {options.num_tasks} x --episodes-per-step {options.episodes_per_step} x horizon {horizon}; "
        f"{len(options.steps)} panels x --max-steps {max_steps} frames of {options.width}x{options.height}",
        allow_large,
    )


def _render(run: Any, config: Mapping[str, Any], options: RenderOptions, target: Path,
            lookup: Callable[[str], Any]) -> RenderResult:
    """The body of :func:`render_run`, once everything is checked."""
    family = config["family"]
    method = lookup(config["method"])
    if method.kind == "identification":
        task = select_task(family, options)
        probe = render.make_render_env(family)
        if render._is_mujoco_env(probe):
            render.select_gl_backend()
        probe.close()
        panel = protonet_panel(run, task, options)
        fps = options.fps or render.env_fps(probe) / options.frame_stride
        count, size = render.write_video(
            _encoding_progress([panel], options, (f"{family} {options.split} #{options.task_index}",),
                               render.env_legend(probe)),
            target,
            fps=fps,
            quality=options.quality,
        )
        return RenderResult(target, count, size, {0: panel.rollout.total_return}, task)
    provider = method.load("policies")
    task = select_task(family, options)
    env = render.make_render_env(family)
    if render._is_mujoco_env(env):
        render.select_gl_backend()

    policies = provider(run, config, task, sorted(set(options.steps)), options)
    max_steps = options.max_steps or run_horizon(config)
    frames = render.FrameRenderer(options.width, options.height)
    panels, returns = [], {}
    try:
        shown = tqdm(options.steps, desc="rendering episodes", unit="episode", disable=not options.progress,
                     leave=False)
        for k in shown:
            episode = render.rollout(
                env, policies[k], frames, task=task, seed=options.seed, max_steps=max_steps
            )
            returns[k] = episode.total_return
            panels.append(render.Panel(episode, (f"{config['method']}  k = {k}",)))
    finally:
        frames.close()
        env.close()
    fps = options.fps or render.env_fps(env) / options.frame_stride
    count, size = render.write_video(
        _encoding_progress(panels, options, video_title(family, task, options), render.env_legend(env)),
        target,
        fps=fps,
        quality=options.quality,
    )
    return RenderResult(path=target, frames=count, size=size, returns=returns, task=task)
