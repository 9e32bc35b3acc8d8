"""``metarl train maml``: meta-train a Gaussian MLP policy with MAML on a task family.

The loop, one meta-iteration at a time (docs/design.md, "Algorithms"):

1. draw ``meta_batch_size`` train tasks from the task stream;
2. for each inner step ``j``: sample support episodes of every task with the
   parameters after ``j`` inner steps (``j = 0``: the meta-parameters);
3. adapt (``MAMLLearner.adapted_params``) and sample the query episodes with
   the adapted parameters;
4. one outer update (``MAMLLearner.meta_update``: TRPO or ProMP);
5. log ``train/``, ``adapt/``, ``loss/``, ``time/`` metrics to metrics.csv and
   TensorBoard; checkpoint every ``checkpoint_every`` iterations and at the end.

Randomness comes from the run seed only: the policy initialisation (torch's
global RNG, forked and seeded, so the caller's state is untouched), the task
stream (a numpy Generator) and the sampling stream (a CPU torch.Generator that
also seeds the env resets). A checkpoint stores all of their states and the
learner's own state, so ``--resume`` continues exactly as the uninterrupted
run would (bit-exact on CPU). Ctrl-C saves the state as of the last completed
iteration, then exits.

Bad input (unknown family, invalid hyperparameters, a run directory of another
run, a corrupted checkpoint or one of another env) is refused before anything
in the run directory is written.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import torch
from tqdm.auto import tqdm

import metarl_envs as envs
from metarl.algorithms.adaptation import OBJECTIVES
from metarl.algorithms.maml.learner import OUTER_ALGORITHMS, MAMLConfig, MAMLLearner
from metarl.algorithms.presets import PRESETS, MAMLRunConfig, maml_preset
from metarl.core.device import DEVICE_CHOICES, resolve_device
from metarl.core.errors import UserError
from metarl.core.flags import OffSwitch, choice, device_choice, family_choice, optional, parse
from metarl.core.interrupts import sigterm_as_interrupt
from metarl.core.policy import NONLINEARITIES, WEIGHT_INITS, GaussianMLPPolicy, stack_params
from metarl.core.sampler import SAMPLER_BACKENDS, Sampler, SamplerChoice, env_dims
from metarl.storage.checkpoint import (
    CheckpointError,
    check_compatible,
    flatten_state,
    generator_state,
    load_checkpoint,
    read_float,
    read_generator,
    read_int,
    restore_numpy_generator,
    restore_tensor_dict,
    save_checkpoint,
)
from metarl.storage.runs import (
    IterationState,
    MetricsLogger,
    RunDir,
    RunDirError,
    check_batch_memory,
    check_resume,
    gradient_run_document,
    load_policy_weights,
    policy_tensors,
    writing_run,
)

TASK_STREAM = 0x7A5C  # child stream of the run seed for the training tasks
SAMPLING_STREAM = 0x5A3F  # child stream for actions and env resets
_RUN_FIELDS = tuple(f.name for f in dataclasses.fields(MAMLRunConfig))


@dataclasses.dataclass
class TrainResult:
    """What :func:`train_maml` returns."""

    run_dir: RunDir
    policy: GaussianMLPPolicy
    iterations: int
    history: list[dict[str, float]]
    seconds: float


def config_document(run_config: MAMLRunConfig, seed: int, device: str, preset: str | None) -> dict[str, Any]:
    """``config.json`` of a MAML run: the run config plus method, seed, device and policy block."""
    document = gradient_run_document(run_config, "maml", seed, device, preset)
    document["metarl_version"] = importlib.metadata.version("metarl")
    return document


def run_config_from_document(document: dict[str, Any]) -> MAMLRunConfig:
    """Rebuild the :class:`MAMLRunConfig` stored in a ``config.json``."""
    try:
        return MAMLRunConfig.from_dict({name: document[name] for name in _RUN_FIELDS})
    except (KeyError, TypeError) as error:
        raise RunDirError(f"config.json of this run is incomplete or from another version ({error!r})") from None


def initial_policy(run_config: MAMLRunConfig, seed: int) -> GaussianMLPPolicy:
    """The policy initialised from ``seed`` (the caller's global torch RNG is left untouched)."""
    obs_dim, act_dim = env_dims(run_config.family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GaussianMLPPolicy(obs_dim, act_dim, run_config.hidden_sizes, run_config.init_std,
                                 run_config.nonlinearity, run_config.weight_init)


def checkpoint_payload(
    policy: GaussianMLPPolicy, learner: MAMLLearner, state: IterationState, family: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a checkpoint of the current state (copied, safe to keep)."""
    learner_tensors, learner_tree = flatten_state(learner.state_dict(), "learner.")
    tensors = {
        **{name: value.detach().cpu().clone() for name, value in policy_tensors(policy).items()},
        **{name: value.detach().cpu().clone() for name, value in learner_tensors.items()},
        "rng.sampling": generator_state(state.sampling_generator),
    }
    metadata = {
        "method": "maml",
        "family": family,
        "obs_dim": policy.obs_dim,
        "act_dim": policy.act_dim,
        "iteration": state.iteration,
        "env_steps": state.env_steps,
        "train_seconds": state.train_seconds,
        "rng_tasks": state.task_rng.bit_generator.state,
        "learner_state": learner_tree,
    }
    return tensors, metadata


def restore_checkpoint(
    path: Path, policy: GaussianMLPPolicy, learner: MAMLLearner, family: str
) -> IterationState:
    """Load ``path`` into ``policy`` and ``learner``; return the saved :class:`IterationState`.

    Every metadata field is checked by type and range (:class:`CheckpointError` naming it).
    """
    tensors, metadata = load_checkpoint(path)
    check_compatible(metadata, family, policy.obs_dim, policy.act_dim, path)
    if metadata.get("method") != "maml":
        raise RunDirError(f"checkpoint {path} belongs to a {metadata.get('method')!r} run, not a MAML run")
    load_policy_weights(policy, tensors, path)
    learner_state = restore_tensor_dict(tensors, metadata.get("learner_state"), path, "learner_state")
    try:
        learner.load_state_dict(learner_state)
    except (ValueError, KeyError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint {path}: metadata field 'learner_state' does not fit this run ({error})") from None
    sampling_generator = read_generator(tensors, "rng.sampling", path)
    return IterationState(
        iteration=read_int(metadata, "iteration", path),
        task_rng=restore_numpy_generator(metadata.get("rng_tasks"), path, "rng_tasks"),
        sampling_generator=sampling_generator,
        env_steps=read_int(metadata, "env_steps", path),
        train_seconds=read_float(metadata, "train_seconds", path),
    )


def meta_iteration(
    policy: GaussianMLPPolicy,
    learner: MAMLLearner,
    sampler: Sampler,
    run_config: MAMLRunConfig,
    state: IterationState,
) -> dict[str, float]:
    """One meta-iteration (sample support, adapt, sample query, outer update); returns its metrics."""
    start = time.perf_counter()
    distribution = envs.distribution(run_config.family)
    tasks = distribution.sample(run_config.meta_batch_size, "train", state.task_rng)
    episodes_per_task = run_config.episodes_per_task
    sample_seconds = env_seconds = 0.0
    metrics: dict[str, float] = {}

    support = []
    task_params = stack_params({k: v.detach() for k, v in policy.params().items()}, len(tasks))
    for step in range(run_config.maml.inner_steps):
        if step > 0:
            task_params = learner.adapted_params(support)
        episodes = sampler.sample(policy, task_params, tasks, episodes_per_task, state.sampling_generator)
        sample_seconds += sampler.last_seconds
        env_seconds += sampler.last_env_seconds
        support.append(episodes)
        metrics[f"adapt/return_k{step}"] = float(episodes.returns.mean())
    adapted = learner.adapted_params(support)
    query = sampler.sample(policy, adapted, tasks, episodes_per_task, state.sampling_generator)
    sample_seconds += sampler.last_seconds
    env_seconds += sampler.last_env_seconds
    k = run_config.maml.inner_steps
    metrics[f"adapt/return_k{k}"] = float(query.returns.mean())

    update_start = time.perf_counter()
    update_metrics = learner.meta_update(support, query)
    update_seconds = time.perf_counter() - update_start

    state.env_steps += sum(e.num_steps for e in support) + query.num_steps
    iteration_seconds = time.perf_counter() - start
    state.train_seconds += iteration_seconds
    metrics.update(
        {
            "train/return_before_adaptation": metrics["adapt/return_k0"],
            "train/return_after_adaptation": metrics[f"adapt/return_k{k}"],
            "adapt/return_gain": metrics[f"adapt/return_k{k}"] - metrics["adapt/return_k0"],
            "train/env_steps": float(state.env_steps),
            "time/sample_s": sample_seconds,
            "time/env_s": env_seconds,
            "time/outside_env_share": 1.0 - env_seconds / max(iteration_seconds, 1e-12),
            "time/update_s": update_seconds,
            "time/iteration_s": iteration_seconds,
            "time/total_s": state.train_seconds,
        }
    )
    for key, value in update_metrics.items():
        metrics.setdefault(key, float(value))
    return metrics


def train_maml(
    run_config: MAMLRunConfig,
    out: Path | str,
    *,
    seed: int = 0,
    device: str = "auto",
    preset: str | None = None,
    resume: bool = False,
    progress: bool = True,
    tensorboard: bool = True,
    sampler: SamplerChoice | None = None,
    allow_large: bool = False,
) -> TrainResult:
    """Meta-train with MAML into the run directory ``out`` (see the module docstring).

    ``sampler`` picks where episodes are collected (default: in this process); every
    backend returns the same episodes, so it is recorded in ``config.json`` but may
    change on ``--resume``. The directory is locked while the run writes it
    (:func:`metarl.storage.runs.writing_run`); SIGTERM is handled as Ctrl-C
    (:func:`metarl.core.interrupts.sigterm_as_interrupt`).

    Raises:
        ValueError / RunDirError / CheckpointError: bad input, before anything is written
            (a meta-batch above half the machine's memory unless ``allow_large``).
        KeyboardInterrupt: after saving a checkpoint of the last completed iteration
            (:class:`metarl.core.interrupts.Terminated` on SIGTERM).
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    check_batch_memory(run_config, allow_large)
    torch_device = resolve_device(device)
    sampler_choice = SamplerChoice() if sampler is None else sampler
    document = config_document(run_config, seed, device, preset)
    document["sampler"] = sampler_choice.to_dict()
    with writing_run(out, document, resume) as run_dir, sigterm_as_interrupt():
        policy = initial_policy(run_config, seed).to(torch_device)
        learner = MAMLLearner(policy, run_config.maml, torch_device)
        state = IterationState.fresh(seed, TASK_STREAM, SAMPLING_STREAM)
        if resume:
            if run_dir.checkpoint_path.exists():
                state = restore_checkpoint(run_dir.checkpoint_path, policy, learner, run_config.family)
                check_resume(run_dir, state.iteration, run_config.iterations)
            else:
                check_resume(run_dir, None, run_config.iterations)
        # Started before anything is written: a missing Ray or too small a cluster writes nothing.
        sampler_backend = sampler_choice.build(
            run_config.family, run_config.meta_batch_size, torch_device, seed, run_config.horizon
        )
        # Everything is validated: from here on the run directory is written.
        try:
            run_dir.write_config(document)
            save_checkpoint(run_dir.checkpoint_path, *checkpoint_payload(policy, learner, state, run_config.family))
            logger = MetricsLogger(run_dir, state.iteration, tensorboard=tensorboard)
        except BaseException:
            sampler_backend.close()
            raise
        history = list(logger.rows)
        start = time.perf_counter()
        snapshot = checkpoint_payload(policy, learner, state, run_config.family)
        bar = tqdm(
            total=run_config.iterations, initial=state.iteration, desc=f"maml {run_config.family}",
            disable=not progress, unit="it",
        )
        try:
            while state.iteration < run_config.iterations:
                snapshot = checkpoint_payload(policy, learner, state, run_config.family)
                metrics = meta_iteration(policy, learner, sampler_backend, run_config, state)
                state.iteration += 1
                logger.log(state.iteration, metrics)
                history.append({"iteration": float(state.iteration), **metrics})
                if state.iteration % run_config.checkpoint_every == 0 or state.iteration == run_config.iterations:
                    save_checkpoint(run_dir.checkpoint_path,
                                    *checkpoint_payload(policy, learner, state, run_config.family))
                bar.update(1)
                bar.set_postfix(
                    before=f"{metrics['train/return_before_adaptation']:.1f}",
                    after=f"{metrics['train/return_after_adaptation']:.1f}",
                )
        except KeyboardInterrupt:
            save_checkpoint(run_dir.checkpoint_path, *snapshot)
            done = snapshot[1]["iteration"]
            print(
                f"\ninterrupted: saved the checkpoint of iteration {done} in {run_dir.checkpoint_path}; "
                f"continue with --resume",
                file=sys.stderr,
            )
            raise
        finally:
            bar.close()
            logger.close()
            sampler_backend.close()
    return TrainResult(run_dir, policy, state.iteration, history, time.perf_counter() - start)


_PRESET = "the preset's"


@dataclasses.dataclass(frozen=True)
class TrainMAMLArgs:
    """Meta-train a policy with MAML (Finn et al. 2017) on a task family.

    Unset hyperparameters come from the preset; with --resume they come from the
    run's config.json (only --iterations and --device may then change).
    """

    out: Path
    """Run directory (created; must be new or empty, or hold this run with --resume)."""
    env: Annotated[str | None, family_choice("required for a new run")] = None
    """Task family, one of the families listed by `metarl envs`."""
    preset: Annotated[str | None, choice(PRESETS, "fast")] = None
    """Named configuration: tiny (CI, seconds), fast (minutes) or paper (the MAML paper's)."""
    seed: Annotated[int | None, optional("INT", "0")] = None
    """Run seed: policy initialisation, training tasks, sampling noise."""
    device: Annotated[str, device_choice()] = "auto"
    """auto (CUDA if available), cpu or cuda."""
    resume: bool = False
    """Continue the run in --out from its last checkpoint (bit-exact on CPU)."""
    iterations: Annotated[int | None, optional("INT", _PRESET)] = None
    """Meta-iterations in total (with --resume: extend the run to this many)."""
    meta_batch_size: Annotated[int | None, optional("INT", _PRESET)] = None
    """Tasks per meta-batch."""
    episodes_per_task: Annotated[int | None, optional("INT", _PRESET)] = None
    """Episodes per task for each inner step and for the query."""
    horizon: Annotated[int | None, optional("INT", "the preset's, else the family's horizon")] = None
    """Episode length."""
    hidden_sizes: Annotated[tuple[int, ...] | None, optional("INT [INT ...]", _PRESET)] = None
    """Widths of the policy's hidden layers, e.g. --hidden-sizes 100 100."""
    init_std: Annotated[float | None, optional("FLOAT", _PRESET)] = None
    """Initial standard deviation of the Gaussian policy."""
    nonlinearity: Annotated[str | None, choice(NONLINEARITIES, _PRESET)] = None
    """The policy's hidden-layer nonlinearity: tanh, or relu (the MAML paper's code)."""
    weight_init: Annotated[str | None, choice(WEIGHT_INITS, _PRESET)] = None
    """The policy's initialisation: pytorch (nn.Linear's default), xavier (Xavier-uniform weights,
    zero biases, as rllab's MAML policies) or xavier_small_out (xavier with the output weights x 0.01:
    the initial mean is near 0 everywhere)."""
    checkpoint_every: Annotated[int | None, optional("INT", _PRESET)] = None
    """Save a checkpoint every this many iterations (and at the end)."""
    outer: Annotated[str | None, choice(OUTER_ALGORITHMS, _PRESET)] = None
    """Outer loop: trpo (trust region through the adaptation) or promp (clipped ratio, Adam)."""
    inner_steps: Annotated[int | None, optional("INT", _PRESET)] = None
    """Inner policy-gradient steps per task."""
    inner_lr: Annotated[float | None, optional("FLOAT", _PRESET)] = None
    """Inner learning rate alpha (> 0)."""
    inner_objective: Annotated[str | None, choice(OBJECTIVES, _PRESET)] = None
    """Inner objective: vpg (MAML paper) or lvc (ProMP's low-variance curvature)."""
    first_order: Annotated[bool | None, choice(("True", "False"), _PRESET)] = None
    """Drop the second-order terms of the meta-gradient (first-order MAML)."""
    max_kl: Annotated[float | None, optional("FLOAT", _PRESET)] = None
    """TRPO trust-region size (KL bound delta)."""
    discount: Annotated[float | None, optional("FLOAT", _PRESET)] = None
    """Discount factor gamma in [0, 1]."""
    gae_lambda: Annotated[float | None, optional("FLOAT", _PRESET)] = None
    """GAE lambda in [0, 1] (1.0: Monte-Carlo returns minus the linear baseline)."""
    cg_iters: Annotated[int | None, optional("INT", _PRESET)] = None
    """TRPO conjugate-gradient iterations."""
    cg_subsample: Annotated[float | None, optional("FLOAT", _PRESET)] = None
    """TRPO: fraction of the meta-batch's tasks whose KL curvature the conjugate gradient uses, in (0, 1]
    (1: exact; the gradient and the line search always use every task)."""
    normalize_advantages: Annotated[bool | None, choice(("True", "False"), _PRESET)] = None
    """Centre and scale advantages per task (rllab's center_adv), in the inner steps, the outer loss and
    at evaluation."""
    promp_steps: Annotated[int | None, optional("INT", _PRESET)] = None
    """ProMP: Adam steps per meta-batch."""
    promp_lr: Annotated[float | None, optional("FLOAT", _PRESET)] = None
    """ProMP: Adam learning rate."""
    promp_clip_eps: Annotated[float | None, optional("FLOAT", _PRESET)] = None
    """ProMP: likelihood-ratio clipping epsilon."""
    promp_kl_coef: Annotated[float | None, optional("FLOAT", _PRESET)] = None
    """ProMP: weight of the KL penalty on the inner step."""
    sampler: Annotated[str, choice(SAMPLER_BACKENDS)] = "local"
    """Where episodes are collected: local (this process) or ray (actors, each stepping a block of the
    meta-batch's tasks; needs pip install -e '.[ray]'). Same episodes either way; may change on --resume."""
    workers: int = 1
    """Ray actors with --sampler ray."""
    ray_address: Annotated[str | None, optional("HOST:PORT", "start Ray on this machine")] = None
    """With --sampler ray: the address of an existing Ray cluster."""
    threads: int = 1
    """CPU threads for torch (1 is fastest for these small networks on a shared machine; not part of
    the run's config, but bit-exact resume needs the same value)."""
    no_progress: OffSwitch = False
    """Hide the progress bar."""
    no_tensorboard: OffSwitch = False
    """Do not write TensorBoard events."""
    allow_large: bool = False
    """Allow a meta-batch (tasks x episodes x horizon) estimated above half of this machine's memory."""


_MAML_FLAGS = (
    "outer", "inner_steps", "inner_lr", "inner_objective", "first_order", "max_kl", "discount", "gae_lambda",
    "cg_iters", "cg_subsample", "normalize_advantages", "promp_steps", "promp_lr", "promp_clip_eps",
    "promp_kl_coef",
)
_RUN_FLAGS = ("iterations", "meta_batch_size", "episodes_per_task", "horizon", "hidden_sizes", "init_std",
              "nonlinearity", "weight_init", "checkpoint_every")


def resolve_run_config(args: TrainMAMLArgs) -> tuple[MAMLRunConfig, str, int]:
    """The run configuration, preset name and seed that ``args`` ask for."""
    if args.device not in DEVICE_CHOICES:
        raise UserError(f"--device must be one of {', '.join(DEVICE_CHOICES)}, got {args.device!r}")
    if args.preset is not None and args.preset not in PRESETS:
        raise UserError(f"unknown preset {args.preset!r}; available presets: {', '.join(PRESETS)}")
    stored = None
    run_dir = RunDir(args.out)
    if args.resume and run_dir.config_path.exists():
        stored = run_dir.read_config()
    if stored is not None and args.env in (None, stored["family"]) and args.preset in (None, stored.get("preset")):
        base, preset, seed = run_config_from_document(stored), stored.get("preset"), stored.get("seed", 0)
    else:
        if args.env is None:
            raise UserError(f"--env is required for a new run; available families: {', '.join(envs.FAMILIES)}")
        preset = args.preset or "fast"
        base, seed = maml_preset(preset, args.env), 0
        if stored is not None:
            seed = stored.get("seed", 0)
    seed = seed if args.seed is None else args.seed
    maml_fields = set(MAMLConfig.flat_keys())
    maml_changes = {
        name: getattr(args, name) for name in _MAML_FLAGS if getattr(args, name) is not None and name in maml_fields
    }
    unsupported = [name for name in _MAML_FLAGS if getattr(args, name) is not None and name not in maml_fields]
    if unsupported:
        raise UserError(f"MAMLConfig has no field(s) {unsupported}; remove those flags")
    run_changes = {name: getattr(args, name) for name in _RUN_FLAGS if getattr(args, name) is not None}
    return base.replace(maml=maml_changes, **run_changes), preset, seed


def main(argv: list[str]) -> int:
    return run(parse(TrainMAMLArgs, argv, prog="metarl train maml"))


def run(args: TrainMAMLArgs) -> int:
    """Train from parsed flags (the method registry's ``train`` entry); returns the exit status."""
    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.sampler not in SAMPLER_BACKENDS:
        raise UserError(f"--sampler must be one of {', '.join(SAMPLER_BACKENDS)}, got {args.sampler!r}")
    if args.sampler == "local" and (args.workers != 1 or args.ray_address is not None):
        raise UserError("--workers and --ray-address apply to --sampler ray only")
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    run_config, preset, seed = resolve_run_config(args)
    result = train_maml(
        run_config, args.out, seed=seed, device=args.device, preset=preset, resume=args.resume,
        progress=not args.no_progress, tensorboard=not args.no_tensorboard,
        sampler=SamplerChoice(args.sampler, args.workers, args.ray_address), allow_large=args.allow_large,
    )
    last = result.history[-1] if result.history else {}
    k = run_config.maml.inner_steps
    if last:
        print(
            f"trained {result.iterations} iterations of MAML on {run_config.family} in {result.seconds:.1f} s; "
            f"last meta-batch: return {last['adapt/return_k0']:.1f} before, {last[f'adapt/return_k{k}']:.1f} "
            f"after {k} inner step(s)"
        )
    print(f"run directory: {result.run_dir.path} (evaluate with `metarl evaluate {result.run_dir.path}`)")
    return 0
