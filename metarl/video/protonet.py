"""The panel of a task-identification run (ProtoNet): the robot acting as when its contexts were
collected, with the variant the identifier picks from the transitions seen so far."""

from __future__ import annotations

from typing import Any

import numpy as np

from metarl.video.options import RenderOptions, describe_task
from metarl.video.panels import Panel
from metarl.video.rollouts import FrameRenderer, make_render_env, random_policy_fn, rollout

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


def protonet_panel(run: Any, task: Any, options: RenderOptions) -> Panel:
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

    env = make_render_env(config.family)
    if behaviour is None:
        act = random_policy_fn(env.action_space, options.seed)
    else:
        rng = np.random.default_rng(options.seed)

        def act(obs: np.ndarray) -> np.ndarray:
            return np.asarray(behaviour(np.asarray(obs, np.float64)[None], rng))[0]

    frames = FrameRenderer(options.width, options.height)
    try:
        episode = rollout(
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
    return Panel(episode, header, step_lines=tuple(lines))
