"""Few-shot identification accuracy of a trained ProtoNet run on unseen variants.

Evaluation (:func:`evaluate_identification`) runs 600 random few-shot episodes
on variants never seen in training (test and ood splits, fixed evaluation
seed) for context sizes C in {1, 4, 16, 64}; every context comes from its own
episode, and a context of size C is the first C transitions of a random
64-transition context. Beside the learned embedding it scores (a) the same
prototype classifier on hand-made statistics of a context (mean and std of
``s' - s`` and of ``r``, standardised with training statistics) and (b) chance
(1 / way). For a discrete family's ood split the candidates of each episode
are the novel variants plus training variants (up to ``way``), so a novel
variant must be told apart from the other novel ones *and* from the training
ones. Mean accuracy with the 95% normal-approximation interval over episodes
(mean ± 1.96 std / sqrt(episodes)), the convention of the few-shot literature.

References: context encoders for task identification in meta-RL as in Rakelly
et al. 2019 (PEARL) and Nagabandi et al. 2019 (crippled-leg HalfCheetah / Ant
variants).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from metarl.core.validation import check_int
from metarl.evaluation.document import IdentificationDocument, IdentificationProtocol, Interval
from metarl.evaluation.protocol import EVAL_SEED, EvalOptions, write_eval_json
from metarl.identification.contexts import Behaviour, check_context_size, collect_contexts
from metarl.identification.encoder import handmade_statistics
from metarl.identification.identifier import load_trained
from metarl.identification.run import behaviour_from_run
from metarl.identification.trainer import TrainedProtoNet
from metarl.identification.variants import check_way, variant_pool
from metarl.storage.runs import RunDir

#: Context sizes of the evaluation table.
EVAL_CONTEXT_SIZES: tuple[int, ...] = (1, 4, 16, 64)


# ----------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------


def few_shot_accuracy(
    embeddings: np.ndarray,
    way: int,
    shot: int,
    queries: int,
    episodes: int,
    rng: np.random.Generator,
    required: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy of the prototype classifier over random few-shot episodes.

    Args:
        embeddings: ``[variants, contexts, E]`` embeddings of every context of the pool.
        way, shot, queries: N variants per episode, K support and Q query contexts each.
        episodes: number of random episodes.
        rng: draws the variants and contexts of each episode.
        required: variant indices present in every episode (the rest is drawn at random).

    Returns:
        ``(episode_accuracy [episodes], required_accuracy [episodes])``: the accuracy over all
        queries of each episode, and over the queries of the required variants (NaN without any).
    """
    variants, contexts, _ = embeddings.shape
    if shot + queries > contexts:
        raise ValueError(f"shot + queries ({shot + queries}) exceeds the {contexts} contexts per variant")
    required = list(required)[:way]
    others = np.setdiff1d(np.arange(variants), required)
    accuracy = np.zeros(episodes)
    required_accuracy = np.full(episodes, np.nan)
    for episode in range(episodes):
        chosen = np.concatenate([required, rng.choice(others, size=way - len(required), replace=False)])
        chosen = chosen.astype(int)
        picks = np.stack([rng.permutation(contexts)[: shot + queries] for _ in range(way)])  # [way, K+Q]
        selected = embeddings[chosen[:, None], picks]  # [way, K+Q, E]
        prototypes = selected[:, :shot].mean(axis=1)  # [way, E]
        query = selected[:, shot:].reshape(way * queries, -1)  # [way*Q, E]
        distances = ((query[:, None] - prototypes[None]) ** 2).sum(axis=-1)  # [way*Q, way]
        correct = distances.argmin(axis=1) == np.repeat(np.arange(way), queries)
        accuracy[episode] = correct.mean()
        if required:
            required_accuracy[episode] = correct[: len(required) * queries].mean()
    return accuracy, required_accuracy


def mean_ci95(values: np.ndarray) -> dict[str, Any]:
    """``{"mean", "ci95": [lo, hi]}`` with the normal-approximation 95% interval."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    half = 1.96 * float(values.std(ddof=1)) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return {"mean": mean, "ci95": [mean - half, mean + half]}


def evaluate_identification(
    trained: TrainedProtoNet,
    split: str,
    way: int | None = None,
    shot: int | None = None,
    queries: int = 15,
    episodes: int = 600,
    context_sizes: Sequence[int] = EVAL_CONTEXT_SIZES,
    eval_variants: int = 100,
    seed: int = EVAL_SEED,
    behaviour: Behaviour | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Few-shot identification accuracy on unseen variants of ``split`` (see the module docstring).

    Args:
        trained: the trained encoder.
        split: ``"test"`` or ``"ood"``.
        way, shot: N and K of the episodes; the training run's by default.
        queries: query contexts per variant and episode.
        episodes: random episodes per context size.
        context_sizes: the C values of the table.
        eval_variants: tasks sampled for a continuous family's pool.
        seed: seeds the variants, the contexts and the episodes.
        behaviour: how contexts are collected; uniform random actions by default.

    Returns:
        The ``eval_<split>.json`` document: ``accuracy`` = {C: {mean, ci95}}, the same for
        ``baselines.handmade_statistics`` and ``baselines.chance``, and the settings.
    """
    if split not in ("test", "ood"):
        raise ValueError(f"split must be 'test' or 'ood' (variants never seen in training), got {split!r}")
    config = trained.config
    way = config.way if way is None else way
    shot = config.shot if shot is None else shot
    for name, value, low in (("way", way, 2), ("shot", shot, 1), ("queries", queries, 1), ("episodes", episodes, 1)):
        check_int(name, value, low)
    sizes = sorted({check_context_size(c) for c in context_sizes})
    if not sizes:
        raise ValueError("context_sizes must hold at least one context size")
    rng = np.random.default_rng(seed)
    pool = variant_pool(config.family, split, eval_variants, rng)
    check_way(way, pool, split, config.family, training=False)
    encoder = trained.encoder
    obs_dim, act_dim = encoder.obs_dim, encoder.act_dim
    start = time.perf_counter()
    contexts = collect_contexts(config.family, pool.tasks, shot + queries + 5, max(sizes), behaviour,
                                seed=int(rng.integers(2**31)), progress=progress)
    # contexts  # [variants, contexts, max C, dim]
    collect_seconds = time.perf_counter() - start
    accuracy: dict[str, Any] = {}
    handmade_accuracy: dict[str, Any] = {}
    novel_accuracy: dict[str, Any] = {}
    episode_seed = int(rng.integers(2**31))
    for size in tqdm(sizes, desc=f"evaluate {split}", disable=not progress, leave=False):
        prefix = torch.from_numpy(contexts[:, :, :size])  # [variants, contexts, C, dim]
        with torch.no_grad():
            learned = encoder(prefix).numpy()  # [variants, contexts, E]
        handmade = (handmade_statistics(prefix.numpy(), obs_dim, act_dim) - trained.handmade_mean) / trained.handmade_std
        # The same episodes (same generator state) for both classifiers: a paired comparison.
        acc, acc_required = few_shot_accuracy(learned, way, shot, queries, episodes,
                                              np.random.default_rng(episode_seed), pool.required)
        base, _ = few_shot_accuracy(handmade, way, shot, queries, episodes,
                                    np.random.default_rng(episode_seed), pool.required)
        accuracy[str(size)] = mean_ci95(acc)
        handmade_accuracy[str(size)] = mean_ci95(base)
        if pool.required:
            novel_accuracy[str(size)] = mean_ci95(acc_required)
    # Online cost: embedding one context of 16 transitions.
    one = torch.from_numpy(contexts[0, 0, :16])
    with torch.no_grad():
        timer = time.perf_counter()
        for _ in range(100):
            encoder(one)
        embed_seconds = (time.perf_counter() - timer) / 100
    document = IdentificationDocument(
        method="protonet",
        protocol=IdentificationProtocol(family=config.family, split=split, variants=len(pool.tasks), way=way,
                                        shot=shot, queries=queries, episodes=episodes, eval_seed=seed),
        discrete_variants=pool.discrete,
        accuracy={size: Interval(**value) for size, value in accuracy.items()},
        handmade_statistics={size: Interval(**value) for size, value in handmade_accuracy.items()},
        chance={str(size): Interval(1.0 / way, (1.0 / way, 1.0 / way)) for size in sizes},
        collect_seconds=collect_seconds,
        embed_seconds_per_context16=embed_seconds,
        params=sum(p.numel() for p in encoder.parameters()),
        novel_variants=tuple(pool.tasks[i].to_dict() for i in pool.required) if pool.required else None,
        accuracy_novel_queries={size: Interval(**value) for size, value in novel_accuracy.items()}
        if pool.required else None,
        variant_tasks=tuple(task.to_dict() for task in pool.tasks) if pool.discrete else None,
    ).to_json()
    return document


def evaluate_protonet_run(
    run_dir: RunDir, config: dict[str, Any], options: EvalOptions, progress: bool = True
) -> dict[str, Any]:
    """``metarl evaluate`` for protonet runs: :func:`evaluate_identification`, written to ``eval_<split>.json``.

    ``options.num_tasks`` is the number of variants of a continuous family's
    pool, ``options.seed`` the evaluation seed; episodes use the run's way and
    shot. Contexts are collected with the run's behaviour.
    """
    if options.tasks is not None or options.samples_per_step is not None:
        flag = "--tasks" if options.tasks is not None else "--samples-per-step"
        raise ValueError(f"{flag} is for runs that adapt by gradient steps; a protonet run identifies "
                         "among the variants of a split: use --split test|ood")
    trained = load_trained(run_dir.path)
    behaviour = behaviour_from_run(config.get("behaviour_run"), trained.config.family)
    document = evaluate_identification(trained, options.split, eval_variants=options.num_tasks,
                                       seed=options.seed, behaviour=behaviour, progress=progress)
    write_eval_json(run_dir, document)
    return document


def format_accuracy_report(document: dict[str, Any]) -> str:
    """A heading and a markdown table of an ``eval_<split>.json`` document (accuracy per context size)."""
    lines = [
        f"protonet on {document['family']} ({document['split']} split, {document['variants']} variants, "
        f"{document['way']}-way {document['shot']}-shot, {document['queries']} queries, "
        f"{document['episodes']} episodes): identification accuracy, mean ± 95% CI",
        "",
        "| C | ProtoNet | hand-made statistics | chance |",
        "|---|---|---|---|",
    ]
    for size, value in document["accuracy"].items():
        base = document["baselines"]["handmade_statistics"][size]
        chance = document["baselines"]["chance"][size]["mean"]
        lines.append(f"| {size} | {_percent(value)} | {_percent(base)} | {100 * chance:.1f}% |")
    if "accuracy_novel_queries" in document:
        novel = ", ".join(f"C={size}: {_percent(value)}" for size, value in document["accuracy_novel_queries"].items())
        lines += ["", f"queries of the novel variants only: {novel}"]
    return "\n".join(lines)


def _percent(value: dict[str, Any]) -> str:
    low, high = value["ci95"]
    return f"{100 * value['mean']:.1f}% ± {100 * (high - low) / 2:.1f}"
